"""A fake kernel file in SGLang's convention (ours, not SGLang's code), with the expand split-K grid bug
(SPEC §4 `expand-splitk-grid`): the expand grid is not multiplied by split_k, so with expand split_k > 1
only a fraction of the expand programs run.

It imports the framework modules SGLang's fused_moe_lora_kernel.py imports (tensor-parallel collectives,
the PDL capability query, custom-op registration), so loading it with `--impl sglang:tests/fakes/
sglang_fused_moe_lora_buggy.py` exercises the stand-ins of fuzz/upstream/standins.py, and it defines
`_fused_moe_lora` with SGLang's signature, launching one program per slot (lora_ids = arange(L)).
"""

import torch
from sgl_kernel.utils import is_arch_support_pdl
from sglang.srt.distributed import tensor_model_parallel_all_gather, tensor_model_parallel_all_reduce  # noqa: F401

from tests.fakes.moe_lora_core import fused_convention

USE_GDC = is_arch_support_pdl()  # queried at import time, as upstream does; the fake never uses PDL
FUZZ_CAPABILITIES = {"fp32_precision": "ieee"}  # the fake upcasts to fp32 and multiplies in IEEE fp32

_fused_moe_lora = fused_convention(expand_grid_covers_split_k=False, slot_programs="max_loras")

try:
    from sglang.srt.utils.common import direct_register_custom_op

    direct_register_custom_op(op_name="fake_fused_moe_lora", op_func=_fused_moe_lora, mutates_args=["output"])
    fused_moe_lora = torch.ops.sglang.fake_fused_moe_lora
except AttributeError:
    fused_moe_lora = _fused_moe_lora
