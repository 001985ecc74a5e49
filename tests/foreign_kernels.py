"""Small Triton kernels that are not ours, written plainly: no bf16 upcast before `tl.dot`, bf16 atomics.

They stand for a third-party kernel run on Triton's CPU interpreter (tests/test_interpreter.py) and, through
the adapter protocol, for a whole fused MoE LoRA implementation the fuzzer can drive:

    python -m fuzz run --impl tests/foreign_kernels.py:pairwise_moe_lora --device cpu --budget 60

matmul_kernel          C = A @ B over one tile, any dtype, `input_precision` as given (None = Triton's default)
atomic_add_kernel      out[idx[i]] += val[i] with tl.atomic_add, masked, addresses may repeat
bf16_ops_kernel        bf16 negation, compare/select, max, /, -, cumsum, fma, max-reduce, fp64 round trip, * scalar
pairwise_moe_lora      the op (SPEC §2), one program per routed pair: shrink with a bf16/fp16/fp32 tl.dot into an
                       fp32 intermediate, expand with a tl.dot and tl.atomic_add of the delta into `out`
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MIN_DOT = 16  # tl.dot tiles of at least 16 in every dimension, as a GPU needs


@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, PRECISION: tl.constexpr):
    """Grid: (1,). a (M, K), b (K, N), c (M, N) fp32, all contiguous, power-of-two sizes."""
    offs_m, offs_n, offs_k = tl.arange(0, M), tl.arange(0, N), tl.arange(0, K)
    a = tl.load(a_ptr + offs_m[:, None] * K + offs_k[None, :])
    b = tl.load(b_ptr + offs_k[:, None] * N + offs_n[None, :])
    if PRECISION is None:
        c = tl.dot(a, b)
    else:
        c = tl.dot(a, b, input_precision=PRECISION)
    tl.store(c_ptr + offs_m[:, None] * N + offs_n[None, :], c)


@triton.jit
def atomic_add_kernel(out_ptr, val_ptr, idx_ptr, n, BLOCK: tl.constexpr):
    """Grid: (cdiv(n, BLOCK),). out[idx[i]] += val[i] for i < n."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    idx = tl.load(idx_ptr + offs, mask=mask, other=0)
    val = tl.load(val_ptr + offs, mask=mask, other=0.0)
    tl.atomic_add(out_ptr + idx, val, mask=mask)


@triton.jit
def bf16_ops_kernel(a_ptr, b_ptr, o_ptr, N: tl.constexpr):
    """Grid: (1,). Row r of o (10, N) holds one elementwise op, cast or reduction of the bf16 vectors a, b."""
    i = tl.arange(0, N)
    a = tl.load(a_ptr + i)
    b = tl.load(b_ptr + i)
    tl.store(o_ptr + 0 * N + i, -a)
    tl.store(o_ptr + 1 * N + i, tl.where(a < b, a, b))
    tl.store(o_ptr + 2 * N + i, tl.maximum(a, b))
    tl.store(o_ptr + 3 * N + i, a / b)
    tl.store(o_ptr + 4 * N + i, a - b)
    tl.store(o_ptr + 5 * N + i, tl.cumsum(a, axis=0))
    tl.store(o_ptr + 6 * N + i, tl.fma(a, b, a))
    tl.store(o_ptr + 7 * N + i, tl.max(a, axis=0) + tl.zeros_like(a))
    tl.store(o_ptr + 8 * N + i, (a.to(tl.float64) * 3).to(tl.bfloat16))
    tl.store(o_ptr + 9 * N + i, a * 2.5)


def bf16_ops(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the kernel gives, what a GPU gives: each op in fp32 or fp64, rounded once to bf16)."""
    got = torch.empty((10, a.numel()), dtype=torch.bfloat16)
    bf16_ops_kernel[(1,)](a, b, got, a.numel())
    af, bf = a.float(), b.float()
    want = [
        -af,
        torch.where(af < bf, af, bf),
        torch.maximum(af, bf),
        af / bf,
        af - bf,
        torch.cumsum(af, 0),
        torch.addcmul(af, af, bf),
        af.max().expand(a.numel()),
        a.double() * 3,
        af * 2.5,
    ]
    return got, torch.stack([w.bfloat16() for w in want])


def matmul(a: torch.Tensor, b: torch.Tensor, precision: str | None = None) -> torch.Tensor:
    c = torch.empty((a.shape[0], b.shape[1]), dtype=torch.float32)
    matmul_kernel[(1,)](a.contiguous(), b.contiguous(), c, a.shape[0], b.shape[1], a.shape[1], precision)
    return c


def atomic_add(out: torch.Tensor, val: torch.Tensor, idx: torch.Tensor, n: int, block: int = 16) -> None:
    """out[idx[i]] += val[i] for i < n; val and idx may hold more (masked off)."""
    atomic_add_kernel[(triton.cdiv(n, block),)](out, val, idx, n, block)


@triton.jit
def gather_kernel(src_ptr, idx_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    on = offs < n
    rows = tl.load(idx_ptr + offs, mask=on, other=0)
    tl.store(out_ptr + offs, tl.load(src_ptr + rows, mask=on, other=0.0), mask=on)


def gather(src: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """out[i] = src[idx[i]] for i < n, with no bound check: a wild index reads wherever it points."""
    out = torch.zeros(16, dtype=src.dtype)
    gather_kernel[(1,)](src, idx, out, n, 16)
    return out


# ---- a whole implementation of the op, one program per routed pair ------------------------------------------


@triton.jit
def _shrink_pair_kernel(
    x_ptr,
    a_ptr,
    t_ptr,  # x rows (K,), lora_a slice (L, E, R, K), intermediate (M*k, R) fp32
    topk_ids_ptr,
    token_lora_ptr,
    enabled_ptr,
    top_k,
    row_div,
    R,
    K,
    stride_xm,
    stride_xk,
    stride_al,
    stride_ae,
    stride_ar,
    stride_ak,
    stride_tf,
    stride_im,
    stride_ij,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Grid: (M*k,). t[f, :] = lora_a[l, e] @ x[f // row_div] for an enabled slot l, else nothing."""
    f = tl.program_id(0)
    m, j = f // top_k, f % top_k
    slot = tl.load(token_lora_ptr + m)
    if slot < 0:
        return
    if tl.load(enabled_ptr + slot) == 0:
        return
    expert = tl.load(topk_ids_ptr + m * stride_im + j * stride_ij)
    rows = tl.arange(0, 16)  # row 0 holds the pair, rows 1..15 are zero: a tile a tensor core can take
    offs_r = tl.arange(0, BLOCK_R)
    a_base = a_ptr + slot.to(tl.int64) * stride_al + expert.to(tl.int64) * stride_ae
    acc = tl.zeros((16, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        xv = tl.load(
            x_ptr + (f // row_div) * stride_xm + offs_k[None, :] * stride_xk + rows[:, None] * 0,
            mask=(rows[:, None] == 0) & (offs_k[None, :] < K),
            other=0.0,
        )
        av = tl.load(
            a_base + offs_r[None, :] * stride_ar + offs_k[:, None] * stride_ak,
            mask=(offs_r[None, :] < R) & (offs_k[:, None] < K),
            other=0.0,
        )
        acc = tl.dot(xv, av, acc=acc, input_precision="ieee")
    tl.store(t_ptr + f * stride_tf + offs_r, tl.sum(acc, axis=0), mask=offs_r < R)


@triton.jit
def _expand_pair_kernel(
    t_ptr,
    b_ptr,
    out_ptr,
    w_ptr,  # intermediate (M*k, R) fp32, lora_b slice (L, E, N, R), out cols (M, k, N)
    topk_ids_ptr,
    token_lora_ptr,
    enabled_ptr,
    top_k,
    R,
    N,
    stride_tf,
    stride_bl,
    stride_be,
    stride_bn,
    stride_br,
    stride_om,
    stride_oj,
    stride_on,
    stride_im,
    stride_ij,
    stride_wm,
    stride_wj,
    MUL_ROUTED_WEIGHT: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Grid: (M*k, cdiv(N, BLOCK_N)). out[m, j, n] += w? * lora_b[l, e, n, :] @ t[f], by tl.atomic_add."""
    f = tl.program_id(0)
    m, j = f // top_k, f % top_k
    slot = tl.load(token_lora_ptr + m)
    if slot < 0:
        return
    if tl.load(enabled_ptr + slot) == 0:
        return
    expert = tl.load(topk_ids_ptr + m * stride_im + j * stride_ij)
    rows = tl.arange(0, 16)
    offs_r = tl.arange(0, BLOCK_R)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    t = tl.load(
        t_ptr + f * stride_tf + offs_r[None, :] + rows[:, None] * 0,
        mask=(rows[:, None] == 0) & (offs_r[None, :] < R),
        other=0.0,
    )
    b_base = b_ptr + slot.to(tl.int64) * stride_bl + expert.to(tl.int64) * stride_be
    bv = tl.load(
        b_base + offs_n[None, :] * stride_bn + offs_r[:, None] * stride_br,
        mask=(offs_n[None, :] < N) & (offs_r[:, None] < R),
        other=0.0,
    )
    d = tl.sum(tl.dot(t.to(bv.dtype), bv, input_precision="ieee"), axis=0)  # the intermediate in the weight dtype
    if MUL_ROUTED_WEIGHT:
        d = d * tl.load(w_ptr + m * stride_wm + j * stride_wj).to(tl.float32)
    out_ptrs = out_ptr + m * stride_om + j * stride_oj + offs_n * stride_on
    tl.atomic_add(out_ptrs, d.to(out_ptr.dtype.element_ty), mask=offs_n < N)


def _block(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(n)))


def pairwise_moe_lora(
    *, out, x, topk_ids, topk_weights, token_lora, adapter_enabled, lora_a, lora_b, mul_routed_weight, offset, layout
) -> None:
    """The adapter protocol (fuzz/targets/impls.py) on the two per-pair kernels above; not tuned, plainly written."""
    m, top_k = topk_ids.shape
    if m == 0:
        return
    num_routed = m * top_k
    rank, k_dim = lora_a[0].shape[2:]
    n_dim = lora_b[0].shape[2]
    enabled = adapter_enabled.to(torch.int32)  # a copy: bool and int8 tables read alike
    row_div = top_k if layout == "per_token" else 1
    block_r, block_k, block_n = _block(rank, MIN_DOT, 1 << 20), _block(k_dim, MIN_DOT, 64), _block(n_dim, MIN_DOT, 64)
    for s, (a, b) in enumerate(zip(lora_a, lora_b, strict=True)):
        t = torch.zeros((num_routed, rank), dtype=torch.float32, device=x.device)
        _shrink_pair_kernel[(num_routed,)](
            x,
            a,
            t,
            topk_ids,
            token_lora,
            enabled,
            top_k,
            row_div,
            rank,
            k_dim,
            x.stride(0),
            x.stride(1),
            a.stride(0),
            a.stride(1),
            a.stride(2),
            a.stride(3),
            t.stride(0),
            topk_ids.stride(0),
            topk_ids.stride(1),
            BLOCK_R=block_r,
            BLOCK_K=block_k,
        )
        cols = out[:, :, offset + s * n_dim :]
        _expand_pair_kernel[(num_routed, triton.cdiv(n_dim, block_n))](
            t,
            b,
            cols,
            topk_weights,
            topk_ids,
            token_lora,
            enabled,
            top_k,
            rank,
            n_dim,
            t.stride(0),
            b.stride(0),
            b.stride(1),
            b.stride(2),
            b.stride(3),
            cols.stride(0),
            cols.stride(1),
            cols.stride(2),
            topk_ids.stride(0),
            topk_ids.stride(1),
            topk_weights.stride(0),
            topk_weights.stride(1),
            MUL_ROUTED_WEIGHT=bool(mul_routed_weight),
            BLOCK_R=block_r,
            BLOCK_N=block_n,
        )
