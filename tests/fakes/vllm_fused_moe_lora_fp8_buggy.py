"""The fake of vllm_fused_moe_lora_fp8.py with the activation scale never applied (as vLLM 0.34's kernel)."""

from tests.fakes import vllm_fused_moe_lora_fp8 as _fake

FUZZ_CAPABILITIES = _fake.FUZZ_CAPABILITIES


def _fused_moe_lora_fp8(**kw):
    _fake.FUZZ_BUG = "act-scale-ignored"
    try:
        return _fake._fused_moe_lora_fp8(**kw)
    finally:
        _fake.FUZZ_BUG = ""
