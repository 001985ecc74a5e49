"""vLLM's quantized fused MoE LoRA op (`vllm/lora/ops/triton_ops/fused_moe_lora_fp8_op.py`, `_fused_moe_lora_fp8`,
first shipped in vLLM 0.34.0) as a fuzzer target, in vLLM's runtime convention:

    --impl vllm-fp8                      the installed vllm's module
    --impl vllm-fp8:path/to/fused_moe_lora_fp8_op.py   a kernel file (vLLM's stand-ins, fuzz/upstream/standins.py)

The convention is the one of `_fused_moe_lora` (fuzz/upstream/conventions.py: slot list padded with -1 to L + 1,
num_active_loras = L + 1, per-slot align layout, the case's launch configuration), plus the quantized arguments,
driven from the case's contract.QuantArgs (contract/quant.py):

    use_fp8_w8a8 / use_int8_w8a8 / use_int8_w8a16   from the scheme
    per_channel_quant                               scale group "channel"
    block_shape                                     [block_n, block_k] for group "block", else None
    lora_a_scale_stacked / lora_b_scale_stacked     the per-slice weight scales, (L, E, Gn, Gk) float32
    qcurr_hidden_states                             w8a8: x quantized by the contract's rule (the caller quantizes:
                                                    the op takes quantized hidden states); w8a16: x
    shrink_act_scale                                w8a8: those codes' scales, (rows, groups) float32
    expand_act_scale                                the static expand scale (static cases), else None: the op
                                                    receives no way to quantize its intermediate dynamically

vLLM 0.34's op asserts block_shape[0] == 0 for w8a16 (no block scales there): this adapter refuses that combination
with NotImplementedError before calling. Facts read in the 0.34.0 wheel (for the docs, not copied): the kernel takes
a_scale_ptr and b_scale_ptr but never loads them, and it casts the weight pointer to the element type of its output.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from moe_lora_fuzz.contract.quant import act_group, quantize_activation, quantizes_activations
from moe_lora_fuzz.fuzz.adapters import FORWARDED, _align, _finish, _resolve_config, _sizes, fused_config_kwargs

from .conventions import ConventionError, _capabilities, vllm_call_values, vllm_default_config, vllm_lora_ids

FRAMEWORK = "vllm-fp8"
MODULE = "vllm.lora.ops.triton_ops.fused_moe_lora_fp8_op"
FUSED = "_fused_moe_lora_fp8"
SCHEMES = ["fp8_w8a8", "int8_w8a8", "int8_w8a16"]
# w8a16 takes no block scales (the op asserts block_shape[0] == 0 there): a precondition, declared
CAPABILITIES = {"fp32_precision": "tf32", "quant": SCHEMES, "quant_groups": {"int8_w8a16": ["tensor", "channel"]}}
_KNOWN = (
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
    "lora_a_scale_stacked",
    "lora_b_scale_stacked",
    "shrink_act_scale",
    "expand_act_scale",
    "mul_routed_weight",
    "fully_sharded",
    "offset",
    "use_fp8_w8a8",
    "use_int8_w8a8",
    "use_int8_w8a16",
    "per_channel_quant",
    "block_shape",
)


def quant_kwargs(x: torch.Tensor, q) -> dict:
    """The quantized keywords of `_fused_moe_lora_fp8` for activations x and the case's QuantArgs."""
    w8a8 = quantizes_activations(q.scheme)
    xq, xs = x, None
    if w8a8:
        static = q.static("shrink") if q.act == "static" else None
        xq, xs = quantize_activation(x, q.scheme, act_group(q.group, x.shape[1], q.block_k), static)
    return dict(
        qcurr_hidden_states=xq,
        lora_a_scale_stacked=list(q.lora_a_scale),
        lora_b_scale_stacked=list(q.lora_b_scale),
        shrink_act_scale=xs,
        expand_act_scale=q.static("expand") if (w8a8 and q.act == "static") else None,
        use_fp8_w8a8=q.scheme == "fp8_w8a8",
        use_int8_w8a8=q.scheme == "int8_w8a8",
        use_int8_w8a16=q.scheme == "int8_w8a16",
        per_channel_quant=q.group == "channel",
        block_shape=[q.block_n, q.block_k] if q.group == "block" else None,
    )


def _binding(fn: Callable, where: str) -> tuple[tuple[str, ...], bool]:
    params = inspect.signature(fn).parameters
    unknown = [
        n
        for n, p in params.items()
        if n not in _KNOWN + tuple(fused_config_kwargs(vllm_default_config(16)))
        and p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if unknown:
        raise ConventionError(f"{where}: {FUSED} has required parameter(s) this adapter does not know: {unknown}")
    active = params.get("num_active_loras")
    names = tuple(params)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # a wrapper taking **kwargs: every known keyword
        names = _KNOWN + tuple(fused_config_kwargs(vllm_default_config(16)))
    return names, active is not None and "Tensor" in str(active.annotation)


def vllm_fp8_adapter(module, where: str, capabilities: dict | None = None) -> Callable:
    """Adapter-protocol function (with `quant=`) around `module._fused_moe_lora_fp8` in vLLM's convention."""
    fn = getattr(module, FUSED, None)
    if not callable(fn):
        raise ConventionError(f"{where} has no function {FUSED}")
    passed, active_is_tensor = _binding(fn, where)
    caps = _capabilities("vllm", module, fn, {**CAPABILITIES, **(capabilities or {})})
    caps.pop("alignment", None)  # the quantized op builds no TMA descriptors

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
        quant=None,
    ):
        del layout  # implied by x.shape[0]
        if quant is None:
            raise NotImplementedError(f"{FUSED} is the quantized op: an unquantized case has no scales to give it")
        if quant.scheme == "int8_w8a16" and quant.group == "block":
            raise NotImplementedError(f"{FUSED} asserts block_shape[0] == 0 for int8_w8a16: no block scales there")
        rank = _sizes(lora_a)[2]
        cfg = _resolve_config(config, vllm_default_config, rank)
        align = _align(topk_ids, lora_a, cfg.block_m, token_lora)
        values = {**vllm_call_values(locals(), align, cfg, active_is_tensor, False), **quant_kwargs(x, quant)}
        fn(**{n: values[n] for n in passed if n in values})

    return _finish(
        adapter,
        f"vllm-fp8({where})",
        f"Adapter-protocol wrapper of {where}.{FUSED} in vLLM's runtime convention (fuzz/upstream/vllm_fp8.py).",
        dict(
            adapter="vllm-fp8",
            fn=FUSED,
            mode="config",
            convention="vllm",
            source=where,
            forwards=FORWARDED,
            default_config=vllm_default_config.__name__,
            lora_ids=vllm_lora_ids.__name__,
            num_active_loras="tensor" if active_is_tensor else "int",
        ),
        caps,
    )


def register(adapters: dict, modules: dict) -> None:
    """Make `vllm-fp8` a framework of fuzz.upstream: its adapter, its installed module, vLLM's stand-ins."""
    from . import standins

    adapters[FRAMEWORK] = vllm_fp8_adapter
    modules[FRAMEWORK] = MODULE
    standins.PACKAGE.setdefault(FRAMEWORK, standins.PACKAGE["vllm"])
    standins.ROOTS.setdefault(FRAMEWORK, standins.ROOTS["vllm"])
