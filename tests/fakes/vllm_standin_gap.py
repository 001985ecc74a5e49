"""A fake kernel file in vLLM's convention (ours) that meets a stand-in gap only when it is CALLED: it asks the
platform for a query no stand-in answers. Loading works; every case must be the verdict `harness-error`
naming `current_platform.no_such_query`, never a kernel finding (tests/test_standins.py)."""

import functools

from vllm.platforms import current_platform

from tests.fakes.moe_lora_core import vllm_fused_convention

FUZZ_CAPABILITIES = {"fp32_precision": "ieee"}
_correct = vllm_fused_convention(expand_grid_covers_split_k=True)


@functools.wraps(_correct)
def _fused_moe_lora(*args, **kwargs):
    current_platform.no_such_query()  # a gap of the harness, not a bug of this kernel
    return _correct(*args, **kwargs)
