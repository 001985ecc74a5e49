"""A fake kernel file in vLLM's convention (ours, not vLLM's code), with the expand split-K grid bug
(SPEC §4 `expand-splitk-grid`): the expand grid is not multiplied by split_k, so with expand split_k > 1
only a fraction of the expand programs run.

It imports the framework modules vLLM's fused_moe_lora_op.py imports (tensor-parallel collectives, Triton
through vllm.triton_utils, custom-op registration from vllm.utils.torch_utils, the platform, and the PDL query
through the relative `.utils`), so loading it with `--impl vllm:tests/fakes/vllm_fused_moe_lora_buggy.py`
exercises the stand-ins of fuzz/upstream/standins.py, and it defines `_fused_moe_lora` with vLLM's current signature
(token_lora_mapping, num_active_loras), launching num_active_loras programs over the -1-padded lora_ids.
"""

import torch
from vllm.distributed import tensor_model_parallel_all_gather, tensor_model_parallel_all_reduce  # noqa: F401
from vllm.platforms import current_platform
from vllm.triton_utils import triton
from vllm.utils.torch_utils import direct_register_custom_op

from tests.fakes.moe_lora_core import vllm_fused_convention

from .utils import supports_pdl

assert triton.cdiv(5, 2) == 3  # the stand-in hands over the real Triton
ON_CUDA = current_platform.is_cuda()
USE_GDC = supports_pdl(None)  # queried as upstream does; the fake never uses PDL
FUZZ_CAPABILITIES = {"fp32_precision": "ieee"}  # the fake upcasts to fp32 and multiplies in IEEE fp32

_fused_moe_lora = vllm_fused_convention(expand_grid_covers_split_k=False)

try:
    direct_register_custom_op(op_name="fake_fused_moe_lora", op_func=_fused_moe_lora, mutates_args=["output"])
    fused_moe_lora = torch.ops.vllm.fake_fused_moe_lora
except AttributeError:
    fused_moe_lora = _fused_moe_lora
