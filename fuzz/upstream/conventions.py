"""SGLang's and vLLM's runtime conventions around `_fused_moe_lora`, as adapter-protocol functions.

What each runtime hands its kernel besides the tensors (SPEC §5 "Upstream calling conventions"):

- **SGLang**: `lora_ids = arange(L)`; the grid launches L programs over slots (the kernel file decides:
  `lora_a_stacked[0].shape[0]`). Launch configuration without a case configuration: both stages at
  BLOCK_M 64, GROUP_SIZE_M 8, 4 warps, 2 stages, split_k 1; shrink BLOCK_N = min(64, next_pow2(R)),
  BLOCK_K 64; expand BLOCK_N 64, BLOCK_K = max(16, min(64, next_pow2(R))).
- **vLLM**: `lora_ids` = the sorted distinct values of token_lora (with -1 first when base-model tokens are
  present) padded with -1 to L + 1 entries; `num_active_loras = L + 1` (vLLM's default, the grid's slot axis;
  an int or a one-element CPU tensor, following the annotation of the loaded function); `token_lora_mapping =
  token_lora`. Without a case configuration: both stages at BLOCK_M 64, GROUP_SIZE_M 8, 4 warps, 3 stages,
  split_k 1; shrink BLOCK_N = min(64, next_pow2(R)), BLOCK_K 32; expand BLOCK_N 64,
  BLOCK_K = max(16, min(32, next_pow2(R))). As the runtime decides: no align buffers (`sorted_token_ids=None`,
  `expert_ids = topk_ids.reshape(-1)`) for few routed pairs (`naive_block_assignment`), where the version
  accepts None; `fully_sharded` on one tensor-parallel rank for a call with a column offset and one call in
  three of the others (`fully_sharded_call`). Its runtime contract (fuzz/upstream/contract.py) ties the
  layout of x to mul_routed_weight.

Both call `_fused_moe_lora` by keyword, with the case's launch configuration forwarded as in
fuzz.adapters (block_m to both stages' block_size_m and to align). vLLM's signature has changed over time, so
its adapter binds by parameter name and refuses (ImplError at load time) a version whose required parameters it
does not know, or one without `lora_ids` (the combined virtual-expert layout, which our align does not build).

Declared capabilities (fuzz.adapters.CAPABILITY_KEYS): both kernels use Triton's default `tl.dot` precision,
TF32 for fp32 inputs on NVIDIA GPUs: `fp32_precision="tf32"`. vLLM's sm90 path builds TMA descriptors that
need 16-byte aligned bases and strides: `alignment=16`. A version without an `offset` parameter declares
`offset=False`. A kernel file may add or override keys with a module-level dict `FUZZ_CAPABILITIES`, and a
caller of load_file/load_installed with `capabilities=`.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import torch
from moe_lora_fuzz.fuzz.adapters import (  # the glue from_fused uses, shared
    FORWARDED,
    _align,
    _finish,
    _resolve_config,
    _sizes,
    check_capabilities,
    from_fused,
    fused_config_kwargs,
)
from moe_lora_fuzz.kernels.config import MoeLoraConfig, TileConfig

from .contract import CONVENTION_RULES, NO_OFFSET_RULES

FUSED = "_fused_moe_lora"
MODULES = {
    "sglang": "sglang.srt.lora.triton_ops.fused_moe_lora_kernel",
    "vllm": "vllm.lora.ops.triton_ops.fused_moe_lora_op",
}
CAPABILITIES = {"sglang": {"fp32_precision": "tf32"}, "vllm": {"fp32_precision": "tf32", "alignment": 16}}


class ConventionError(Exception):
    """The loaded module does not follow the convention (the loader turns it into an ImplError)."""


def _pow2(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


def sglang_default_config(rank: int) -> MoeLoraConfig:
    """SGLang's hard-coded launch arguments for a padded rank R (its `_get_moe_lora_block_config`)."""
    r = _pow2(rank)
    return MoeLoraConfig(
        block_m=64,
        shrink=TileConfig(block_n=min(64, r), block_k=64, group_size_m=8, num_warps=4, num_stages=2),
        expand=TileConfig(block_n=64, block_k=max(16, min(64, r)), group_size_m=8, num_warps=4, num_stages=2),
    )


def vllm_default_config(rank: int) -> MoeLoraConfig:
    """vLLM's default fused_moe_lora launch arguments (`get_lora_op_configs` without tuned files)."""
    r = _pow2(rank)
    return MoeLoraConfig(
        block_m=64,
        shrink=TileConfig(block_n=min(64, r), block_k=32, group_size_m=8, num_warps=4, num_stages=3),
        expand=TileConfig(block_n=64, block_k=max(16, min(32, r)), group_size_m=8, num_warps=4, num_stages=3),
    )


def sglang_lora_ids(token_lora: torch.Tensor, num_slots: int) -> torch.Tensor:
    """SGLang's slot list: every slot, in order (no -1 entry)."""
    return torch.arange(num_slots, dtype=torch.int32, device=token_lora.device)


def vllm_lora_ids(token_lora: torch.Tensor, num_slots: int) -> torch.Tensor:
    """vLLM's slot list: sorted distinct slots of the batch (-1 first if base tokens), padded with -1 to L + 1."""
    ids = torch.full((num_slots + 1,), -1, dtype=torch.int32, device=token_lora.device)
    present = torch.unique(token_lora.to(torch.int32), sorted=True)
    ids[: present.numel()] = present
    return ids


def _fused_of(module, where: str) -> Callable:
    fn = getattr(module, FUSED, None)
    if not callable(fn):
        raise ConventionError(f"{where} has no function {FUSED}")
    return fn


def _capabilities(framework: str, module, fn: Callable, overrides: dict | None) -> dict:
    caps = dict(CAPABILITIES[framework])
    params = inspect.signature(fn).parameters
    if "offset" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        caps["offset"] = False  # an older version: the call cannot say where the slices go
    caps.update(getattr(module, "FUZZ_CAPABILITIES", None) or {})
    caps.update(overrides or {})
    return check_capabilities(caps)


def _settings(adapter: Callable, framework: str, where: str) -> Callable:
    adapter.settings = dict(adapter.settings, convention=framework, source=where)
    return adapter


def sglang_adapter(module, where: str, capabilities: dict | None = None) -> Callable:
    """Adapter-protocol function around `module._fused_moe_lora` in SGLang's runtime convention."""
    fn = _fused_of(module, where)
    adapter = from_fused(
        fn,
        default_config=sglang_default_config,
        lora_ids=sglang_lora_ids,
        capabilities=_capabilities("sglang", module, fn, capabilities),
    )
    adapter.__name__ = adapter.__qualname__ = f"sglang({where})"
    return _settings(adapter, "sglang", where)


# vLLM's parameters this adapter can supply, by name; anything else must have a default
_VLLM_KNOWN = (
    "output",
    "qcurr_hidden_states",
    "lora_a_stacked",
    "lora_b_stacked",
    "topk_weights",
    "sorted_token_ids",
    "expert_ids",
    "num_tokens_post_padded",
    "token_lora_mapping",
    "max_lora_rank",
    "top_k_num",
    "lora_ids",
    "num_active_loras",
    "adapter_enabled",
    "mul_routed_weight",
    "fully_sharded",
    "offset",
) + tuple(fused_config_kwargs(MoeLoraConfig()))


def _vllm_binding(fn: Callable, where: str) -> tuple[tuple[str, ...], bool]:
    """(the parameter names to pass, whether num_active_loras is a tensor) for this version of vLLM."""
    params = inspect.signature(fn).parameters
    if "lora_ids" not in params:
        raise ConventionError(
            f"{where}: {FUSED} takes no lora_ids (the combined virtual-expert align layout); "
            f"only the per-slot layout (L, P) is supported"
        )
    unknown = [
        n
        for n, p in params.items()
        if n not in _VLLM_KNOWN
        and p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if unknown:
        raise ConventionError(
            f"{where}: {FUSED} has required parameter(s) this adapter does not know: {', '.join(unknown)}"
        )
    active = params.get("num_active_loras")
    tensor = active is not None and "Tensor" in str(active.annotation)
    return tuple(n for n in params if n in _VLLM_KNOWN), tensor


NAIVE_SPARSITY = 8  # vLLM's SPARSITY_FACTOR in that rule


@dataclasses.dataclass(frozen=True)
class _Naive:
    sorted_token_ids: None
    expert_ids: torch.Tensor
    num_tokens_post_padded: None


def naive_block_assignment(m: int, top_k: int, num_experts: int, num_slots: int, fully_sharded: bool) -> bool:
    """vLLM's runtime choice of `sorted_token_ids=None` (vllm/lora/punica_wrapper/punica_gpu.py:
    PunicaWrapperGPU.add_lora_w13, `naive_block_assignment`, SPARSITY_FACTOR 8): few routed pairs for the
    experts and slots, not fully sharded. Then expert_ids = topk_ids.reshape(-1) and no align buffers
    (PunicaWrapperGPU.moe_lora_align_block_size). Taken only by a version whose signature accepts None."""
    return not fully_sharded and m * top_k * NAIVE_SPARSITY <= num_experts * num_slots


def fully_sharded_call(m: int, top_k: int, num_experts: int, num_slots: int, rank: int) -> bool:
    """Whether this call runs as a fully sharded LoRA layer on one tensor-parallel rank (vLLM's
    `fully_sharded_loras`; the collectives are the identity there): one call in three, by a hash of the sizes,
    so a replay of the same case takes the same branch."""
    return (m * 7 + top_k * 5 + num_experts * 3 + num_slots * 11 + rank) % 3 == 0


def vllm_call_values(a: dict, align, cfg, active_is_tensor: bool, sharded: bool) -> dict:
    """The keywords of vLLM's fused call (`_fused_moe_lora`, and `_fused_moe_lora_fp8` before its quantized ones)
    from an adapter call's arguments `a` (the protocol's names), its align buffers and launch configuration."""
    _e, num_slots, rank, _s = _sizes(a["lora_a"])
    active = num_slots + 1  # the slot list is padded with -1 to L + 1 entries
    return dict(
        output=a["out"],
        qcurr_hidden_states=a["x"],
        lora_a_stacked=list(a["lora_a"]),
        lora_b_stacked=list(a["lora_b"]),
        topk_weights=a["topk_weights"],
        sorted_token_ids=align.sorted_token_ids,
        expert_ids=align.expert_ids,
        num_tokens_post_padded=align.num_tokens_post_padded,
        token_lora_mapping=a["token_lora"],
        max_lora_rank=rank,
        top_k_num=a["topk_ids"].shape[1],
        lora_ids=vllm_lora_ids(a["token_lora"], num_slots),
        num_active_loras=torch.tensor([active], dtype=torch.int32) if active_is_tensor else active,
        adapter_enabled=a["adapter_enabled"],
        mul_routed_weight=bool(a["mul_routed_weight"]),
        fully_sharded=sharded,
        offset=int(a["offset"]),
        **fused_config_kwargs(cfg),
    )


def vllm_adapter(module, where: str, capabilities: dict | None = None) -> Callable:
    """Adapter-protocol function around `module._fused_moe_lora` in vLLM's runtime convention."""
    fn = _fused_of(module, where)
    passed, active_is_tensor = _vllm_binding(fn, where)
    naive_ok = "None" in str(inspect.signature(fn).parameters["sorted_token_ids"].annotation)
    caps = _capabilities("vllm", module, fn, capabilities)

    def adapter(
        *,
        out,
        x,
        topk_ids,
        topk_weights,
        token_lora,
        adapter_enabled,
        lora_a,
        lora_b,
        mul_routed_weight,
        offset,
        layout,
        config=None,
    ):
        del layout  # implied by x.shape[0]
        num_experts, num_slots, rank, _s = _sizes(lora_a)
        cfg = _resolve_config(config, vllm_default_config, rank)
        if "offset" not in passed and offset:
            raise NotImplementedError(f"offset={offset}: this vLLM version's {FUSED} takes no offset")
        m, top_k = topk_ids.shape
        # a column offset comes only from a fully sharded layer (vllm/lora/punica_wrapper/punica_gpu.py:
        # PunicaWrapperGPU.add_lora_w2, offset = shard size * tp rank when fully_sharded, else 0)
        sharded = "fully_sharded" in passed and (
            offset > 0 or fully_sharded_call(m, top_k, num_experts, num_slots, rank)
        )
        if naive_ok and naive_block_assignment(m, top_k, num_experts, num_slots, sharded):
            align = _Naive(None, topk_ids.reshape(-1), None)
        else:
            align = _align(topk_ids, lora_a, cfg.block_m, token_lora)
        values = vllm_call_values(locals(), align, cfg, active_is_tensor, sharded)
        fn(**{n: values[n] for n in passed})

    return _finish(
        adapter,
        f"vllm({where})",
        f"Adapter-protocol wrapper of {where}.{FUSED} in vLLM's runtime convention (fuzz.upstream).",
        dict(
            adapter="vllm",
            fn=FUSED,
            mode="config",
            convention="vllm",
            source=where,
            forwards=FORWARDED,
            default_config=vllm_default_config.__name__,
            lora_ids=vllm_lora_ids.__name__,
            passed=list(passed),
            contract=list(CONVENTION_RULES["vllm"]) + ([] if "offset" in passed else list(NO_OFFSET_RULES)),
            naive_sparsity=NAIVE_SPARSITY if naive_ok else None,
            num_active_loras="tensor" if active_is_tensor else "int",
        ),
        caps,
    )


ADAPTERS = {"sglang": sglang_adapter, "vllm": vllm_adapter}
