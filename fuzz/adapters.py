"""Turn implementations written to upstream calling conventions into the fuzzer's adapter protocol.

The fuzzer calls an external implementation with keyword arguments only (fuzz.impls):

    impl(out=, x=, topk_ids=, topk_weights=, token_lora=, adapter_enabled=, lora_a=, lora_b=,
         mul_routed_weight=, offset=, layout=)

and the implementation must add the op's delta (SPEC §2) into `out` in place. Serving-engine kernels do not
look like that: they take precomputed align buffers (SPEC §3.1) and a long positional argument list. The two
helpers here do the glue, so wrapping such a kernel takes a couple of lines:

    from fuzz.adapters import from_fused, from_shrink_expand
    my_impl = from_fused(my_fused_moe_lora, block_size_m=16)              # one fused call
    my_impl2 = from_shrink_expand(my_shrink, my_expand, block_size_m=32)  # two calls, one intermediate

and then `python -m fuzz run --impl path/to/file.py:my_impl`.

Both wrappers run `kernels.moe_lora_align_block_size` once per call with their `block_size_m`, hand the
wrapped code the slot list `kernels.default_slot_ids(L)` (-1 first, then 0..L-1, as upstream), and pass `x`
unchanged: the wrapped code must tell the layout from the row count (x.shape[0] == M: per-token, row of the
routed pair f = m*k + j is f // k; x.shape[0] == M*k: per-routed, row f; the two agree when k == 1). The
routed weight and the layout are independent (SPEC §2): a kernel that assumes mul_routed_weight implies the
per-routed layout is wrong, and the fuzzer is meant to catch it.

Common to both conventions (L slots, E experts, R padded rank, K input width, N slice width, S slices):

    y / out                  (M, k, W) tensor in x's dtype, W >= offset + S*N, possibly a strided view;
                             add the delta into columns [offset + s*N, offset + (s+1)*N), touch nothing else
    x                        (M, K) or (M*k, K) activations
    lora_a_stacked           tuple of S tensors (L, E, R, K), x's dtype (rows beyond an adapter's rank are 0)
    lora_b_stacked           tuple of S tensors (L, E, N, R), x's dtype
    topk_weights             (M, k) floating routed weights
    sorted_token_ids         (L, P) int32: per slot row, flat indices f = m*k + j grouped by expert, each
                             group padded to a multiple of block_size_m with the sentinel M*k
    expert_ids               (L, P // block_size_m) int32: the expert of each block, -1 for unused blocks
    num_tokens_post_padded   (L,) int32: the used (padded) length of each slot row, 0 for unused slots
    lora_ids                 (L + 1,) int32: the slot list [-1, 0, 1, ..., L-1]; -1 is the base model
    adapter_enabled          (L,) integer or bool, 0 = disabled (its tokens are still in the align rows:
                             the kernel must skip them)
    block_size_m             int: the BLOCK_M the align buffers were built with (P is a multiple of it)
    top_k                    int: k
    max_lora_rank            int: R
    mul_routed_weight        bool: multiply each pair's delta by topk_weights[m, j] exactly once
    offset                   int >= 0

P = kernels.padded_length(M*k, E, block_size_m). All tensors are on the campaign's device.
"""

from __future__ import annotations

from typing import Callable

import torch

from kernels import default_slot_ids, moe_lora_align_block_size

__all__ = ["from_fused", "from_shrink_expand"]


def _sizes(lora_a) -> tuple[int, int, int, int]:
    """(num_experts, num_slots, rank, num_slices) from the adapter-protocol arguments."""
    num_slots, num_experts, rank, _k_dim = lora_a[0].shape
    return num_experts, num_slots, rank, len(lora_a)


def _align(topk_ids, token_lora, lora_a, block_size_m: int):
    num_experts, num_slots, _rank, _s = _sizes(lora_a)
    align = moe_lora_align_block_size(topk_ids, token_lora, num_experts, num_slots, block_size_m)
    return align, default_slot_ids(num_slots, topk_ids.device)


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _named(adapter: Callable, name: str, doc: str) -> Callable:
    adapter.__name__ = adapter.__qualname__ = name
    adapter.__doc__ = doc
    return adapter


def _check_block(block_size_m: int) -> None:
    if not (isinstance(block_size_m, int) and block_size_m >= 1):
        raise ValueError(f"block_size_m: expected an int >= 1, got {block_size_m!r}")


def from_fused(fn: Callable, *, block_size_m: int = 16, **fn_kwargs) -> Callable:
    """Wrap a fused implementation `fn` into the adapter protocol.

    The returned function runs align once (kernels.moe_lora_align_block_size with `block_size_m`) and then
    calls, with exactly these 15 positional arguments (see the module docstring for their shapes):

        fn(y, x, lora_a_stacked, lora_b_stacked, topk_weights,
           sorted_token_ids, expert_ids, num_tokens_post_padded,
           max_lora_rank, top_k, lora_ids, adapter_enabled, block_size_m,
           mul_routed_weight, offset, **fn_kwargs)

    where y is the protocol's `out` (updated in place by fn; its return value is ignored),
    lora_a_stacked = tuple(lora_a), lora_b_stacked = tuple(lora_b), lora_ids = [-1, 0, ..., L-1] and
    `fn_kwargs` are forwarded unchanged as keyword arguments (tile sizes, split-K and the like). `fn` does not
    receive topk_ids, token_lora or layout: the align buffers carry the routing and the slots, and the layout
    follows from x.shape[0] (M or M*k). It is called for every case, including an empty batch (M = 0).
    """
    _check_block(block_size_m)

    def adapter(*, out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b,
                mul_routed_weight, offset, layout):
        del layout  # implied by x.shape[0]; the fuzzer only passes x with the matching row count
        _e, _l, rank, _s = _sizes(lora_a)
        align, lora_ids = _align(topk_ids, token_lora, lora_a, block_size_m)
        fn(out, x, tuple(lora_a), tuple(lora_b), topk_weights,
           align.sorted_token_ids, align.expert_ids, align.num_tokens_post_padded,
           rank, topk_ids.shape[1], lora_ids, adapter_enabled, block_size_m,
           bool(mul_routed_weight), int(offset), **fn_kwargs)

    return _named(adapter, f"fused({_name(fn)})",
                  f"Adapter-protocol wrapper of {_name(fn)} (fuzz.adapters.from_fused, block_size_m={block_size_m}).")


def from_shrink_expand(shrink: Callable, expand: Callable, *, block_size_m: int = 16,
                       intermediate_dtype: torch.dtype | None = torch.float32,
                       shrink_kwargs: dict | None = None, expand_kwargs: dict | None = None) -> Callable:
    """Wrap a two-stage implementation (a shrink call, then an expand call) into the adapter protocol.

    The returned function runs align once (kernels.moe_lora_align_block_size with `block_size_m`), allocates
    one zero-filled intermediate

        intermediate = torch.zeros((S, M*k, R), dtype=intermediate_dtype or x.dtype, device=x.device)

    (row f = m*k + j; `.view(S, M, k, R)` gives the (S, M, k, R) form of SPEC §3.2) and makes exactly these
    two calls, each with positional arguments in this order plus the given keyword dicts:

        shrink(intermediate, x, lora_a_stacked,
               sorted_token_ids, expert_ids, num_tokens_post_padded,
               top_k, lora_ids, adapter_enabled, block_size_m, **shrink_kwargs)
            must set intermediate[s, f, :] = lora_a_stacked[s][l, e] @ x_row(f) for every routed pair f of an
            enabled slot l listed in the align buffers (e its expert). It may accumulate (split-K atomics):
            the intermediate starts at zero. Rows of other pairs may be left as they are.

        expand(y, intermediate, lora_b_stacked, topk_weights,
               sorted_token_ids, expert_ids, num_tokens_post_padded,
               top_k, lora_ids, adapter_enabled, block_size_m, mul_routed_weight, offset, **expand_kwargs)
            must add (topk_weights[m, j] if mul_routed_weight else 1) * lora_b_stacked[s][l, e] @
            intermediate[s, f] into y[m, j, offset + s*N : offset + (s+1)*N] for the same pairs.

    y is the protocol's `out`; return values are ignored. Neither call receives topk_ids, token_lora or layout
    (see from_fused). intermediate_dtype=None stores the intermediate in x's dtype, as upstream does:
    less precise, but still within the oracle's bound, which allows t to be rounded once to x's dtype before
    expand. Both calls are made for every case, including an empty batch (M = 0).
    """
    _check_block(block_size_m)
    shrink_kwargs = dict(shrink_kwargs or {})
    expand_kwargs = dict(expand_kwargs or {})

    def adapter(*, out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b,
                mul_routed_weight, offset, layout):
        del layout  # implied by x.shape[0]
        _e, _l, rank, slices = _sizes(lora_a)
        m, k = topk_ids.shape
        align, lora_ids = _align(topk_ids, token_lora, lora_a, block_size_m)
        intermediate = torch.zeros((slices, m * k, rank), dtype=intermediate_dtype or x.dtype, device=x.device)
        shrink(intermediate, x, tuple(lora_a), align.sorted_token_ids, align.expert_ids,
               align.num_tokens_post_padded, k, lora_ids, adapter_enabled, block_size_m, **shrink_kwargs)
        expand(out, intermediate, tuple(lora_b), topk_weights, align.sorted_token_ids, align.expert_ids,
               align.num_tokens_post_padded, k, lora_ids, adapter_enabled, block_size_m,
               bool(mul_routed_weight), int(offset), **expand_kwargs)

    return _named(adapter, f"shrink_expand({_name(shrink)}, {_name(expand)})",
                  f"Adapter-protocol wrapper of {_name(shrink)} and {_name(expand)} "
                  f"(fuzz.adapters.from_shrink_expand, block_size_m={block_size_m}).")
