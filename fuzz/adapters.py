"""Turn implementations written to upstream calling conventions into the fuzzer's adapter protocol.

The fuzzer calls an external implementation with keyword arguments only (fuzz.targets.impls):

    impl(out=, x=, topk_ids=, topk_weights=, token_lora=, adapter_enabled=, lora_a=, lora_b=,
         mul_routed_weight=, offset=, layout=[, config=])

and the implementation must add the op's delta (SPEC §2) into `out` in place. An implementation whose
signature has a `config` parameter also receives the case's launch configuration (kernels.config.MoeLoraConfig:
`block_m` and per stage `shrink` / `expand` a TileConfig). Serving-engine kernels do not look like that: they
take precomputed align buffers (SPEC §3.1), a long positional argument list and seven launch arguments per
stage. The two helpers here do the glue, so wrapping such a kernel takes a couple of lines:

    from moe_lora_fuzz.fuzz.adapters import from_fused, from_shrink_expand
    impl = from_fused(my_fused_moe_lora)                     # launch configuration forwarded per case
    impl2 = from_shrink_expand(my_shrink, my_expand)         # two calls, one intermediate
    legacy = from_fused(my_fused_moe_lora, block_size_m=16)  # fixed BLOCK_M, no configuration (the old form)

and then `moe-lora-fuzz run --impl path/to/file.py:impl`.

Two modes, chosen by `block_size_m`:

- **configuration mode** (`block_size_m` left out): the adapter has a `config=None` keyword. It runs align
  with `config.block_m` and forwards the configuration to upstream's per-stage arguments, in upstream's
  order per stage (SGLang `_fused_moe_lora`, vLLM `_fused_moe_lora`, and their `_fused_moe_lora_shrink` /
  `_fused_moe_lora_expand`):

      block_size_m  <- config.block_m        (shared: align's block size; both stages get the same value)
      block_size_n  <- config.<stage>.block_n
      block_size_k  <- config.<stage>.block_k
      group_size_m  <- config.<stage>.group_size_m
      num_warps     <- config.<stage>.num_warps
      num_stages    <- config.<stage>.num_stages
      split_k       <- config.<stage>.split_k

  A fused call gets them as keywords `shrink_block_size_m, ..., shrink_split_k, expand_block_size_m, ...,
  expand_split_k`; a stage call as `block_size_m, ..., split_k`. `config.<stage>.n_tiles` and
  `config.align` have no upstream counterpart and are not forwarded (adapter.settings["forwards"] lists
  what is). Called with config=None (a fuzzer that does not pass one), the adapter uses `default_config`
  (a MoeLoraConfig, or a function of the padded rank R returning one; MoeLoraConfig() if not given).
- **legacy mode** (`block_size_m=` given): today's behaviour, unchanged: align with that block size, the
  wrapped code receives `block_size_m` positionally and nothing else of a configuration; the adapter has no
  `config` parameter, so the fuzzer neither passes nor varies one for it.

Both modes hand the wrapped code the slot list `lora_ids` (default `kernels.default_slot_ids(L)`: -1 first,
then 0..L-1; `lora_ids=` takes a function (token_lora, num_slots) -> int32 tensor for another runtime's
convention) and pass `x` unchanged: the wrapped code must tell the layout from the row count (x.shape[0] == M:
per-token, row of the routed pair f = m*k + j is f // k; x.shape[0] == M*k: per-routed, row f; the two agree
when k == 1). The routed weight and the layout are independent (SPEC §2): a kernel that assumes
mul_routed_weight implies the per-routed layout is wrong, and the fuzzer is meant to catch it.

Common to both conventions (L slots, E experts, R padded rank, K input width, N slice width, S slices):

    y / out                  (M, k, W) tensor in x's dtype, W >= offset + S*N, possibly a strided view;
                             add the delta into columns [offset + s*N, offset + (s+1)*N), touch nothing else
    x                        (M, K) or (M*k, K) activations
    lora_a_stacked           S tensors (L, E, R, K), x's dtype (rows beyond an adapter's rank are 0):
                             a tuple in legacy mode, a list (as upstream annotates it) in configuration mode
    lora_b_stacked           S tensors (L, E, N, R), x's dtype (tuple / list as above)
    topk_weights             (M, k) floating routed weights
    sorted_token_ids         (L, P) int32: per slot row, flat indices f = m*k + j grouped by expert, each
                             group padded to a multiple of block_size_m with the sentinel M*k
    expert_ids               (L, P // block_size_m) int32: the expert of each block, -1 for unused blocks
    num_tokens_post_padded   (L,) int32: the used (padded) length of each slot row, 0 for unused slots
    lora_ids                 int32 slot list, by default (L + 1,) [-1, 0, 1, ..., L-1]; -1 is the base model
    adapter_enabled          (L,) integer or bool, 0 = disabled (its tokens are still in the align rows:
                             the kernel must skip them)
    block_size_m             int: the BLOCK_M the align buffers were built with (P is a multiple of it)
    top_k                    int: k
    max_lora_rank            int: R
    mul_routed_weight        bool: multiply each pair's delta by topk_weights[m, j] exactly once
    offset                   int >= 0

P = kernels.padded_length(M*k, E, block_size_m). All tensors are on the campaign's device.

Every adapter carries `adapter.settings` (a JSON-able dict: which helper, the wrapped names, the mode, the
fixed block size or the default configuration, the forwarded knobs, the extra keywords) so that a repro can
store how the kernel was wrapped, and `adapter.capabilities` when `capabilities=` was given (the keys of
CAPABILITY_KEYS, documented in docs/adapters.md).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Callable

import torch
from moe_lora_fuzz.kernels import default_slot_ids, moe_lora_align_block_size
from moe_lora_fuzz.kernels.config import MoeLoraConfig

__all__ = ["CAPABILITY_KEYS", "STAGE_ARGS", "fused_config_kwargs", "from_fused", "from_shrink_expand", "stage_args"]

STAGES = ("shrink", "expand")
# upstream's per-stage launch arguments, in upstream's order, and the configuration field each comes from
STAGE_ARGS = ("block_size_m", "block_size_n", "block_size_k", "group_size_m", "num_warps", "num_stages", "split_k")
_TILE_FIELD = {
    "block_size_n": "block_n",
    "block_size_k": "block_k",
    "group_size_m": "group_size_m",
    "num_warps": "num_warps",
    "num_stages": "num_stages",
    "split_k": "split_k",
}
FORWARDED = ("block_m",) + tuple(f"{s}.{f}" for s in STAGES for f in _TILE_FIELD.values())
CAPABILITY_KEYS = (
    "fp32_precision",
    "dtypes",
    "layouts",
    "mul_routed_weight",
    "strided_inputs",
    "alignment",
    "contiguous_out",
    "max_rank",
    "split_k",
    "offset",
    "quant",
    "quant_groups",
    "act_scales",
)


def stage_args(config: MoeLoraConfig, stage: str) -> dict:
    """Upstream's seven launch arguments of one stage ("shrink" or "expand"), from a launch configuration."""
    if stage not in STAGES:
        raise ValueError(f"stage: must be one of {STAGES} (got {stage!r})")
    tile = getattr(config, stage)
    args = {"block_size_m": config.block_m}
    args.update({name: getattr(tile, field) for name, field in _TILE_FIELD.items()})
    return {name: args[name] for name in STAGE_ARGS}


def fused_config_kwargs(config: MoeLoraConfig) -> dict:
    """The 14 keywords of an upstream fused call: shrink_block_size_m, ..., shrink_split_k, expand_..."""
    return {f"{stage}_{name}": v for stage in STAGES for name, v in stage_args(config, stage).items()}


def check_capabilities(capabilities) -> dict:
    """A copy of `capabilities` after checking its keys (the fuzzer interprets the values)."""
    if not isinstance(capabilities, dict):
        raise TypeError(f"capabilities: expected a dict, got {type(capabilities).__name__}")
    unknown = sorted(set(capabilities) - set(CAPABILITY_KEYS))
    if unknown:
        raise ValueError(f"capabilities: unknown key {unknown[0]!r}; known: {', '.join(CAPABILITY_KEYS)}")
    return dict(capabilities)


def _sizes(lora_a) -> tuple[int, int, int, int]:
    """(num_experts, num_slots, rank, num_slices) from the adapter-protocol arguments."""
    num_slots, num_experts, rank, _k_dim = lora_a[0].shape
    return num_experts, num_slots, rank, len(lora_a)


def _align(topk_ids, lora_a, block_size_m: int, token_lora):
    num_experts, num_slots, _rank, _s = _sizes(lora_a)
    return moe_lora_align_block_size(topk_ids, token_lora, num_experts, num_slots, block_size_m)


def _default_lora_ids(token_lora: torch.Tensor, num_slots: int) -> torch.Tensor:
    return default_slot_ids(num_slots, token_lora.device)


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _jsonable(v):
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _jsonable(dataclasses.asdict(v))
    return repr(v)


def _finish(adapter: Callable, name: str, doc: str, settings: dict, capabilities) -> Callable:
    adapter.__name__ = adapter.__qualname__ = name
    adapter.__doc__ = doc
    adapter.settings = _jsonable(settings)
    if capabilities is not None:
        adapter.capabilities = check_capabilities(capabilities)
    return adapter


def _check_block(block_size_m) -> None:
    if not (type(block_size_m) is int and block_size_m >= 1):
        raise ValueError(f"block_size_m: expected an int >= 1, got {block_size_m!r}")


def _config_source(default_config) -> Callable[[int], MoeLoraConfig]:
    """A function rank -> MoeLoraConfig for calls without a configuration."""
    if default_config is None:
        return lambda _rank: MoeLoraConfig()
    if isinstance(default_config, MoeLoraConfig):
        return lambda _rank: default_config
    if callable(default_config):
        return default_config
    raise TypeError(
        f"default_config: expected a MoeLoraConfig or a function of the rank, got {type(default_config).__name__}"
    )


def _resolve_config(config, defaults: Callable[[int], MoeLoraConfig], rank: int) -> MoeLoraConfig:
    config = defaults(rank) if config is None else config
    if not isinstance(config, MoeLoraConfig):
        raise TypeError(f"config: expected a MoeLoraConfig, got {type(config).__name__}")
    _check_block(config.block_m)
    return config


def _default_settings(default_config) -> object:
    if default_config is None or isinstance(default_config, MoeLoraConfig):
        return default_config or MoeLoraConfig()
    return _name(default_config)


def from_fused(
    fn: Callable,
    *,
    block_size_m: int | None = None,
    default_config=None,
    lora_ids: Callable | None = None,
    capabilities: dict | None = None,
    **fn_kwargs,
) -> Callable:
    """Wrap a fused implementation `fn` into the adapter protocol.

    Configuration mode (no `block_size_m`): the returned adapter takes `config=None`, runs align once with
    config.block_m and calls, with upstream's 12 leading positional arguments (SGLang's and vLLM's
    `_fused_moe_lora` start the same way) and keywords for the rest:

        fn(y, x, lora_a_stacked, lora_b_stacked, topk_weights,
           sorted_token_ids, expert_ids, num_tokens_post_padded,
           max_lora_rank, top_k, lora_ids, adapter_enabled,
           shrink_block_size_m=, shrink_block_size_n=, shrink_block_size_k=, shrink_group_size_m=,
           shrink_num_warps=, shrink_num_stages=, shrink_split_k=,
           expand_block_size_m=, ..., expand_split_k=,
           mul_routed_weight=, offset=, **fn_kwargs)

    Legacy mode (`block_size_m=` given), exactly as before: align with `block_size_m`, then 15 positional
    arguments and no configuration:

        fn(y, x, lora_a_stacked, lora_b_stacked, topk_weights,
           sorted_token_ids, expert_ids, num_tokens_post_padded,
           max_lora_rank, top_k, lora_ids, adapter_enabled, block_size_m,
           mul_routed_weight, offset, **fn_kwargs)

    y is the protocol's `out` (updated in place by fn; its return value is ignored), lora_ids comes from
    `lora_ids(token_lora, L)` (default [-1, 0, ..., L-1]) and `fn_kwargs` are forwarded unchanged as keyword
    arguments. `fn` does not receive topk_ids, token_lora or layout: the align buffers carry the routing and
    the slots, and the layout follows from x.shape[0] (M or M*k). It is called for every case, including an
    empty batch (M = 0).
    """
    slot_list = lora_ids or _default_lora_ids
    if block_size_m is not None:
        _check_block(block_size_m)

        def legacy(
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
        ):
            del layout  # implied by x.shape[0]; the fuzzer only passes x with the matching row count
            _e, num_slots, rank, _s = _sizes(lora_a)
            align = _align(topk_ids, lora_a, block_size_m, token_lora)
            fn(
                out,
                x,
                tuple(lora_a),
                tuple(lora_b),
                topk_weights,
                align.sorted_token_ids,
                align.expert_ids,
                align.num_tokens_post_padded,
                rank,
                topk_ids.shape[1],
                slot_list(token_lora, num_slots),
                adapter_enabled,
                block_size_m,
                bool(mul_routed_weight),
                int(offset),
                **fn_kwargs,
            )

        return _finish(
            legacy,
            f"fused({_name(fn)})",
            f"Adapter-protocol wrapper of {_name(fn)} (fuzz.adapters.from_fused, block_size_m={block_size_m}).",
            dict(
                adapter="from_fused",
                fn=_name(fn),
                mode="legacy",
                block_size_m=block_size_m,
                lora_ids=_name(slot_list),
                fn_kwargs=fn_kwargs,
            ),
            capabilities,
        )

    defaults = _config_source(default_config)

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
        _e, num_slots, rank, _s = _sizes(lora_a)
        cfg = _resolve_config(config, defaults, rank)
        align = _align(topk_ids, lora_a, cfg.block_m, token_lora)
        fn(
            out,
            x,
            list(lora_a),
            list(lora_b),
            topk_weights,
            align.sorted_token_ids,
            align.expert_ids,
            align.num_tokens_post_padded,
            rank,
            topk_ids.shape[1],
            slot_list(token_lora, num_slots),
            adapter_enabled,
            **fused_config_kwargs(cfg),
            mul_routed_weight=bool(mul_routed_weight),
            offset=int(offset),
            **fn_kwargs,
        )

    return _finish(
        adapter,
        f"fused({_name(fn)})",
        f"Adapter-protocol wrapper of {_name(fn)} (fuzz.adapters.from_fused, launch configuration "
        f"forwarded per stage).",
        dict(
            adapter="from_fused",
            fn=_name(fn),
            mode="config",
            forwards=FORWARDED,
            default_config=_default_settings(default_config),
            lora_ids=_name(slot_list),
            fn_kwargs=fn_kwargs,
        ),
        capabilities,
    )


def from_shrink_expand(
    shrink: Callable,
    expand: Callable,
    *,
    block_size_m: int | None = None,
    intermediate_dtype: torch.dtype | None = torch.float32,
    shrink_kwargs: dict | None = None,
    expand_kwargs: dict | None = None,
    default_config=None,
    lora_ids: Callable | None = None,
    capabilities: dict | None = None,
) -> Callable:
    """Wrap a two-stage implementation (a shrink call, then an expand call) into the adapter protocol.

    The returned function runs align once (with config.block_m, or `block_size_m` in legacy mode), allocates
    one zero-filled intermediate

        intermediate = torch.zeros((S, M*k, R), dtype=intermediate_dtype or x.dtype, device=x.device)

    (row f = m*k + j; `.view(S, M, k, R)` gives the (S, M, k, R) form of SPEC §3.2) and makes exactly these
    two calls. Configuration mode (no `block_size_m`; the adapter takes `config=None`):

        shrink(intermediate, x, lora_a_stacked, sorted_token_ids, expert_ids, num_tokens_post_padded,
               top_k, lora_ids, adapter_enabled,
               block_size_m=, block_size_n=, block_size_k=, group_size_m=, num_warps=, num_stages=, split_k=,
               **shrink_kwargs)                                     # the shrink stage of the configuration
        expand(y, intermediate, lora_b_stacked, topk_weights, sorted_token_ids, expert_ids,
               num_tokens_post_padded, top_k, lora_ids, adapter_enabled,
               block_size_m=, ..., split_k=,                          # the expand stage of the configuration
               mul_routed_weight=, offset=, **expand_kwargs)

    Legacy mode (`block_size_m=` given), exactly as before:

        shrink(intermediate, x, lora_a_stacked, sorted_token_ids, expert_ids, num_tokens_post_padded,
               top_k, lora_ids, adapter_enabled, block_size_m, **shrink_kwargs)
        expand(y, intermediate, lora_b_stacked, topk_weights, sorted_token_ids, expert_ids,
               num_tokens_post_padded, top_k, lora_ids, adapter_enabled, block_size_m, mul_routed_weight, offset,
               **expand_kwargs)

    shrink must set intermediate[s, f, :] = lora_a_stacked[s][l, e] @ x_row(f) for every routed pair f of an
    enabled slot l listed in the align buffers (e its expert). It may accumulate (split-K atomics): the
    intermediate starts at zero. Rows of other pairs may be left as they are. expand must add
    (topk_weights[m, j] if mul_routed_weight else 1) * lora_b_stacked[s][l, e] @ intermediate[s, f] into
    y[m, j, offset + s*N : offset + (s+1)*N] for the same pairs.

    y is the protocol's `out`; return values are ignored. Neither call receives topk_ids, token_lora or layout
    (see from_fused). intermediate_dtype=None stores the intermediate in x's dtype, as upstream does:
    less precise, but still within the oracle's bound, which allows t to be rounded once to x's dtype before
    expand. Both calls are made for every case, including an empty batch (M = 0).
    """
    shrink_kwargs = dict(shrink_kwargs or {})
    expand_kwargs = dict(expand_kwargs or {})
    slot_list = lora_ids or _default_lora_ids
    names = f"{_name(shrink)}, {_name(expand)}"
    settings = dict(
        adapter="from_shrink_expand",
        shrink=_name(shrink),
        expand=_name(expand),
        intermediate_dtype=str(intermediate_dtype),
        lora_ids=_name(slot_list),
        shrink_kwargs=shrink_kwargs,
        expand_kwargs=expand_kwargs,
    )

    def stages(
        out,
        x,
        topk_ids,
        topk_weights,
        token_lora,
        adapter_enabled,
        lora_a,
        lora_b,
        block_m: int,
        stacked: type,
        shrink_args: tuple,
        shrink_kw: dict,
        expand_args: tuple,
        expand_kw: dict,
    ) -> None:
        _e, num_slots, rank, slices = _sizes(lora_a)
        m, k = topk_ids.shape
        align = _align(topk_ids, lora_a, block_m, token_lora)
        ids = slot_list(token_lora, num_slots)
        intermediate = torch.zeros((slices, m * k, rank), dtype=intermediate_dtype or x.dtype, device=x.device)
        shrink(
            intermediate,
            x,
            stacked(lora_a),
            align.sorted_token_ids,
            align.expert_ids,
            align.num_tokens_post_padded,
            k,
            ids,
            adapter_enabled,
            *shrink_args,
            **shrink_kw,
        )
        expand(
            out,
            intermediate,
            stacked(lora_b),
            topk_weights,
            align.sorted_token_ids,
            align.expert_ids,
            align.num_tokens_post_padded,
            k,
            ids,
            adapter_enabled,
            *expand_args,
            **expand_kw,
        )

    if block_size_m is not None:
        _check_block(block_size_m)

        def legacy(
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
        ):
            del layout  # implied by x.shape[0]
            stages(
                out,
                x,
                topk_ids,
                topk_weights,
                token_lora,
                adapter_enabled,
                lora_a,
                lora_b,
                block_size_m,
                tuple,
                (block_size_m,),
                shrink_kwargs,
                (block_size_m, bool(mul_routed_weight), int(offset)),
                expand_kwargs,
            )

        return _finish(
            legacy,
            f"shrink_expand({names})",
            f"Adapter-protocol wrapper of {names} (fuzz.adapters.from_shrink_expand, block_size_m={block_size_m}).",
            dict(settings, mode="legacy", block_size_m=block_size_m),
            capabilities,
        )

    defaults = _config_source(default_config)

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
        cfg = _resolve_config(config, defaults, _sizes(lora_a)[2])
        stages(
            out,
            x,
            topk_ids,
            topk_weights,
            token_lora,
            adapter_enabled,
            lora_a,
            lora_b,
            cfg.block_m,
            list,
            (),
            {**stage_args(cfg, "shrink"), **shrink_kwargs},
            (),
            {
                **stage_args(cfg, "expand"),
                "mul_routed_weight": bool(mul_routed_weight),
                "offset": int(offset),
                **expand_kwargs,
            },
        )

    return _finish(
        adapter,
        f"shrink_expand({names})",
        f"Adapter-protocol wrapper of {names} (fuzz.adapters.from_shrink_expand, launch "
        f"configuration forwarded per stage).",
        dict(settings, mode="config", forwards=FORWARDED, default_config=_default_settings(default_config)),
        capabilities,
    )


def takes_config(fn: Callable) -> bool:
    """Whether `fn`'s signature has a `config` parameter (the protocol passes the configuration to those)."""
    try:
        return "config" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
