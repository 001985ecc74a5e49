"""Host layer of the fused MoE LoRA op: check, allocate, launch.

    out[m, j, offset + s*N : offset + (s+1)*N] += w? * lora_b[s][l, e] @ (lora_a[s][l, e] @ row)

for every routed pair (m, j) whose token has an enabled slot l = token_lora[m] >= 0, e = topk_ids[m, j].
Design choice: the intermediate (S, M*k, R) is kept in fp32 (the upstream keeps it in the activation
dtype, which loses precision); expand rounds it to the weight dtype right before its tensor-core dot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import triton
from moe_lora_fuzz.contract import LAYOUTS, interpreter_limit, layout_of, row_divisor
from triton.runtime.errors import OutOfResources

from .align import AlignBuffers, moe_lora_align_block_size, padded_length
from .config import MoeLoraConfig, TileConfig, default_config
from .moe_lora_kernels import moe_lora_matmul_kernel
from .mutants import NO_DEVIATION, Deviation
from .runtime import INTERPRET

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True)
class Workspace:
    """Buffers the kernels write besides `out`; any left None is allocated per call."""

    intermediate: torch.Tensor | None = None  # (S, M*k, R) float32
    align: AlignBuffers | None = None


@dataclass(frozen=True)
class MoeLoraCall:
    """A checked call: the tensors plus the sizes derived from them."""

    out: torch.Tensor
    x: torch.Tensor
    topk_ids: torch.Tensor
    topk_weights: torch.Tensor
    token_lora: torch.Tensor
    adapter_enabled: torch.Tensor
    lora_a: tuple
    lora_b: tuple
    mul_routed_weight: bool
    offset: int
    layout: str
    m: int
    top_k: int
    num_experts: int
    num_slots: int
    rank: int
    k_dim: int
    n_dim: int

    @property
    def num_routed(self) -> int:
        return self.m * self.top_k

    @property
    def num_slices(self) -> int:
        return len(self.lora_a)


def _need(cond: bool, msg, exc=ValueError) -> None:
    """Raise exc(msg) unless cond; msg may be a function giving the message (formatted only on failure: these
    checks run on every call, and formatting shapes costs more than checking them)."""
    if not cond:
        raise exc(msg() if callable(msg) else msg)


def _tensor(name: str, t, ndim: int, dtypes: tuple, device=None) -> None:
    if isinstance(t, torch.Tensor) and t.dim() == ndim and t.dtype in dtypes and (device is None or t.device == device):
        return  # the common case, without formatting a message
    _need(isinstance(t, torch.Tensor), lambda: f"{name}: expected a torch.Tensor, got {type(t).__name__}", TypeError)
    _need(t.dim() == ndim, lambda: f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    _need(
        t.dtype in dtypes,
        lambda: f"{name}: dtype {t.dtype} not allowed (allowed: {', '.join(map(str, dtypes))})",
        TypeError,
    )
    _need(device is None or t.device == device, lambda: f"{name}: on {t.device}, expected {device} like x")


def _weights(name: str, ws, x: torch.Tensor, dtypes: tuple | None = None) -> tuple:
    _need(
        isinstance(ws, (list, tuple)) and len(ws) >= 1,
        lambda: f"{name}: expected a non-empty list of per-slice tensors",
        TypeError,
    )
    for i, w in enumerate(ws):
        _tensor(f"{name}[{i}]", w, 4, dtypes or (x.dtype,), x.device)
        _need(
            w.shape == ws[0].shape and w.stride() == ws[0].stride(),
            lambda i=i: f"{name}[{i}]: every slice must share shape and strides with {name}[0] (one pointer table)",
        )
    return tuple(ws)


def prepare(
    out,
    x,
    topk_ids,
    topk_weights,
    token_lora,
    adapter_enabled,
    lora_a: Sequence,
    lora_b: Sequence,
    *,
    mul_routed_weight: bool,
    offset: int = 0,
    layout: str | None = None,
    validate_ids: bool = False,
    weight_dtypes: tuple | None = None,
) -> MoeLoraCall:
    """Check every argument against the contract and derive the sizes; raises ValueError/TypeError.
    weight_dtypes: the dtypes lora_a / lora_b may have (default: x's; quantized calls: the code dtype)."""
    _need(isinstance(x, torch.Tensor), lambda: f"x: expected a torch.Tensor, got {type(x).__name__}", TypeError)
    _tensor("x", x, 2, SUPPORTED_DTYPES)
    dev = x.device
    _need(
        dev.type == "cuda" or INTERPRET,
        lambda: f"x: on {dev}; CPU tensors need Triton's interpreter (set TRITON_INTERPRET=1 before importing)",
    )
    _tensor("topk_ids", topk_ids, 2, (torch.int32, torch.int64), dev)
    m, top_k = topk_ids.shape
    _need(top_k >= 1, "topk_ids: needs at least one column (top_k >= 1)")
    _tensor("topk_weights", topk_weights, 2, SUPPORTED_DTYPES, dev)
    _need(
        topk_weights.shape == topk_ids.shape,
        lambda: f"topk_weights: shape {tuple(topk_weights.shape)} != topk_ids shape {tuple(topk_ids.shape)}",
    )
    _tensor("token_lora", token_lora, 1, (torch.int32, torch.int64), dev)
    _need(token_lora.shape[0] == m, lambda: f"token_lora: length {token_lora.shape[0]} != M={m}")
    lora_a = _weights("lora_a", lora_a, x, weight_dtypes)
    lora_b = _weights("lora_b", lora_b, x, weight_dtypes)
    _need(len(lora_a) == len(lora_b), lambda: f"lora_b: {len(lora_b)} slices but lora_a has {len(lora_a)}")
    num_slots, num_experts, rank, k_dim = lora_a[0].shape
    _need(
        lora_b[0].shape[:2] == (num_slots, num_experts) and lora_b[0].shape[3] == rank,
        lambda: f"lora_b: shape {tuple(lora_b[0].shape)} must be (L={num_slots}, E={num_experts}, N, R={rank})",
    )
    n_dim = lora_b[0].shape[2]
    _need(min(num_slots, num_experts, rank, k_dim, n_dim) >= 1, "lora_a/lora_b: every dimension must be >= 1")
    _tensor("adapter_enabled", adapter_enabled, 1, (torch.int32, torch.int64, torch.bool, torch.int8, torch.uint8), dev)
    _need(
        adapter_enabled.shape[0] == num_slots,
        lambda: f"adapter_enabled: length {adapter_enabled.shape[0]} != L={num_slots}",
    )
    _need(x.shape[1] == k_dim, lambda: f"x: width {x.shape[1]} != K={k_dim} of lora_a")
    if layout is None:
        layout = layout_of(x.shape[0], m, top_k)  # ValueError naming x when neither layout fits
    _need(layout in LAYOUTS, lambda: f"layout: {layout!r} is not one of {LAYOUTS}")
    rows = m * top_k if layout == "per_routed" else m
    _need(x.shape[0] == rows, lambda: f"x: {x.shape[0]} rows but layout {layout!r} needs {rows}")
    _need(type(offset) is int and offset >= 0, lambda: f"offset: must be an int >= 0, got {offset!r}")
    _tensor("out", out, 3, (x.dtype,), dev)
    width = offset + len(lora_a) * n_dim
    _need(
        out.shape[:2] == (m, top_k) and out.shape[2] >= width,
        lambda: f"out: shape {tuple(out.shape)} must be (M={m}, k={top_k}, W>=offset+S*N={width})",
    )
    if validate_ids and m > 0:
        _need(
            0 <= int(topk_ids.min()) and int(topk_ids.max()) < num_experts,
            lambda: f"topk_ids: values must lie in [0, E={num_experts})",
        )
        _need(
            -1 <= int(token_lora.min()) and int(token_lora.max()) < num_slots,
            lambda: f"token_lora: values must lie in [-1, L={num_slots})",
        )
    return MoeLoraCall(
        out,
        x,
        topk_ids,
        topk_weights,
        token_lora,
        adapter_enabled,
        lora_a,
        lora_b,
        bool(mul_routed_weight),
        offset,
        layout,
        m,
        top_k,
        num_experts,
        num_slots,
        rank,
        k_dim,
        n_dim,
    )


def check_config(call: MoeLoraCall, config: MoeLoraConfig) -> None:
    _need(
        isinstance(config, MoeLoraConfig),
        lambda: f"config: expected MoeLoraConfig, got {type(config).__name__}",
        TypeError,
    )
    config.validate()
    dtype = str(call.x.dtype).removeprefix("torch.")
    limit = interpreter_limit(dtype, config.expand.split_k, interpreter_bf16_ok()) if INTERPRET else None
    _need(limit is None, lambda: f"config.{limit}; use split_k = 1 on CPU")


def interpreter_bf16_ok() -> bool:
    """Whether Triton's interpreter computes bf16 dots and atomic adds correctly: only once fuzz/interpreter.py
    has patched it (it marks the builder). Then our bf16 tiles run uncast, as on a GPU."""
    if not INTERPRET:
        return True
    from triton.runtime import interpreter

    return bool(getattr(interpreter.InterpreterBuilder, "bf16_emulated", False))


_CONSTANTS: dict = {}


def _cached(key, make) -> torch.Tensor:
    """Small device constants (pointer tables, slot lists) built once: no host-to-device copy per call,
    so a call can be captured in a CUDA graph after its first run. Keys hold plain addresses and sizes;
    a table of addresses stays correct whatever later lives at those addresses."""
    t = _CONSTANTS.get(key)
    if t is None:
        if len(_CONSTANTS) > 4096:
            _CONSTANTS.clear()
        t = _CONSTANTS[key] = make()
    return t


def _pointer_table(ws: tuple) -> torch.Tensor:
    ptrs = tuple(w.data_ptr() for w in ws)
    dev = ws[0].device

    def make() -> torch.Tensor:
        host = torch.tensor(ptrs, dtype=torch.int64)
        if dev.type != "cuda":
            return host.to(dev)
        # from pinned memory, asynchronously: a pageable copy waits for the stream to drain (every kernel queued
        # before it, e.g. the align), a stall per call whenever the weights' addresses are new. The pinned block
        # is not reused before the copy completes (PyTorch's caching host allocator records the copy's event).
        return host.pin_memory().to(dev, non_blocking=True)

    return _cached(("ptrs", str(dev), ptrs), make)


def _launch(
    call: MoeLoraCall,
    stage: str,
    x,
    x_strides,
    weights,
    out,
    out_strides,
    align: AlignBuffers,
    slot_ids,
    tile: TileConfig,
    block_m: int,
    *,
    row_div: int,
    mul_routed_weight: bool,
    accumulate: bool,
    dev: Deviation,
    quant=None,
) -> None:
    shrink = stage == "shrink"  # one program covers every slice (S*R columns), expand one slice per program
    k_dim, n_dim = (call.k_dim, call.rank * call.num_slices) if shrink else (call.rank, call.n_dim)
    if quant is None:
        scaled = _UNQUANTIZED
    else:  # the scales and switches of the quantized kernel (kernels/moe_lora_quant.py); BLOCK_K may be clamped
        from .moe_lora_quant import quant_launch_args

        tile, scaled = quant_launch_args(call, quant, stage, tile, dev)
    sorted_ids, expert_ids = align.sorted_token_ids, align.expert_ids
    stride_sorted, stride_expert = sorted_ids.stride(0), expert_ids.stride(0)
    if dev.unrounded_pad_stride:  # the kernel's idea of P, unrounded, disagrees with align's
        stride_sorted = call.num_routed + call.num_experts * (block_m - 1)
        stride_expert = stride_sorted // block_m
    num_slot_ids = slot_ids.shape[0] - (1 if dev.slot_grid_short else 0)
    groups = call.num_experts * (1 if dev.launch_bound_per_expert else call.num_slots)
    num_pid_m = min(num_slot_ids * expert_ids.shape[1], max_used_blocks(call.num_routed, groups, block_m))
    split_grid = 1 if (stage == "expand" and dev.expand_grid_ignores_split_k) else tile.split_k
    grid = (split_grid * num_pid_m * triton.cdiv(n_dim, tile.block_n * tile.n_tiles), 1 if shrink else call.num_slices)
    if min(grid) == 0:
        return
    w0 = weights[0]
    enabled = torch.ones_like(call.adapter_enabled) if dev.ignore_adapter_enabled else call.adapter_enabled
    is_bf16 = call.x.dtype == torch.bfloat16
    try:  # a tile too large for this GPU's shared memory is a bad config, said clearly
        moe_lora_matmul_kernel[grid](
            x,
            _pointer_table(weights),
            w0,
            out,
            call.topk_weights,
            sorted_ids,
            expert_ids,
            align.num_tokens_post_padded,
            slot_ids,
            enabled,
            call.num_routed,
            call.top_k,
            n_dim,
            call.rank if shrink else n_dim,
            k_dim,
            num_pid_m,
            num_slot_ids,
            row_div,
            *x_strides,
            w0.stride(0),
            w0.stride(1),
            w0.stride(2),
            w0.stride(3),
            *out_strides,
            call.topk_weights.stride(0),
            call.topk_weights.stride(1),
            stride_sorted,
            stride_expert,
            MUL_ROUTED_WEIGHT=mul_routed_weight,
            ACCUMULATE=accumulate,
            MASK_K=not dev.drop_k_mask,
            UPCAST=INTERPRET and is_bf16 and not interpreter_bf16_ok(),
            DOT_PRECISION="ieee" if call.x.dtype == torch.float32 and not dev.fp32_dot_tf32 else "tf32",
            BLOCK_M=block_m,
            BLOCK_N=tile.block_n,
            BLOCK_K=tile.block_k,
            GROUP_SIZE_M=tile.group_size_m,
            SPLIT_K=tile.split_k,
            N_TILES=tile.n_tiles,
            W_ALIGNED=all(w.data_ptr() % 16 == 0 for w in weights),
            SLICES_IN_N=shrink,
            G_P2=triton.next_power_of_2(num_slot_ids),
            FULL_LAST_GROUP=dev.full_last_group,
            num_warps=tile.num_warps,
            num_stages=tile.num_stages,
            **scaled,
        )
    except OutOfResources as e:
        raise ValueError(f"config.{stage}: {e} (BLOCK_M={block_m}, {tile})") from None


# what the unquantized kernel gets for the quantized kernel's arguments: None (a compile-time constant, unused)
_UNQUANTIZED = dict.fromkeys(
    (
        "ws_table_ptr",
        "ws0_ptr",
        "x_scale_ptr",
        "group_n",
        "group_k",
        "stride_wsl",
        "stride_wse",
        "stride_wsn",
        "stride_wsk",
    )
)


def max_used_blocks(num_routed: int, num_groups: int, block_m: int) -> int:
    """An upper bound on the non-empty BLOCK_M blocks of all slot rows together, known without reading
    align's output: each routed pair lies in one (slot, expert) group of at most num_groups = L*E, and
    sum_g ceil(c_g / BM) <= sum_g floor(c_g / BM) + #nonempty groups <= Mk // BM + min(L*E, Mk).
    Launching only these keeps decode-sized batches from paying for mostly idle programs."""
    return num_routed // block_m + min(num_groups, num_routed)


def run_shrink(
    call: MoeLoraCall,
    intermediate: torch.Tensor,
    align: AlignBuffers,
    slot_ids: torch.Tensor,
    config: MoeLoraConfig,
    dev: Deviation = NO_DEVIATION,
    quant=None,
) -> None:
    """intermediate[s, f, :] = lora_a[s][l, e] @ x[row(f)] for every aligned routed pair f (quant: a
    contract.QuantArgs; w8a8 quantizes x in the kernel)."""
    tile = config.shrink
    if tile.split_k > 1 and not dev.skip_intermediate_zeroing:
        intermediate.zero_()  # the atomic adds need a zero start
    row_div = row_divisor(call.layout, call.top_k)
    if dev.row_index_from_routed_weight:  # upstream: mul_routed_weight taken to imply per-routed rows
        row_div = 1 if call.mul_routed_weight else call.top_k
    t = intermediate
    _launch(
        call,
        "shrink",
        call.x,
        (0, call.x.stride(0), call.x.stride(1)),
        call.lora_a,
        t,
        (t.stride(0), t.stride(1) * call.top_k, t.stride(1), t.stride(2)),
        align,
        slot_ids,
        tile,
        config.block_m,
        row_div=row_div,
        mul_routed_weight=dev.routed_weight_in_shrink and call.mul_routed_weight,
        accumulate=False,
        dev=dev,
        quant=quant,
    )


def run_expand(
    call: MoeLoraCall,
    intermediate: torch.Tensor,
    align: AlignBuffers,
    slot_ids: torch.Tensor,
    config: MoeLoraConfig,
    dev: Deviation = NO_DEVIATION,
    quant=None,
) -> None:
    """out[m, j, offset + s*N + n] += w? * lora_b[s][l, e] @ intermediate[s, f] (quant: w8a8 quantizes the
    intermediate in the kernel)."""
    t, out = intermediate, call.out
    cols = out[:, :, call.offset :]
    _launch(
        call,
        "expand",
        t,
        (t.stride(0), t.stride(1), t.stride(2)),
        call.lora_b,
        cols,
        (call.n_dim * out.stride(2), out.stride(0), out.stride(1), out.stride(2)),
        align,
        slot_ids,
        config.expand,
        config.block_m,
        row_div=1,
        mul_routed_weight=call.mul_routed_weight,
        accumulate=True,
        dev=dev,
        quant=quant,
    )


def _check_workspace(call: MoeLoraCall, ws: Workspace, block_m: int) -> None:
    t = ws.intermediate
    if t is not None:
        shape = (call.num_slices, call.num_routed, call.rank)
        _tensor("workspace.intermediate", t, 3, (torch.float32,), call.x.device)
        _need(
            tuple(t.shape) == shape, lambda: f"workspace.intermediate: shape {tuple(t.shape)} != (S, M*k, R) = {shape}"
        )
    a = ws.align
    _need(
        a is None or isinstance(a, AlignBuffers),
        lambda: f"workspace.align: expected kernels.AlignBuffers, got {type(a).__name__}",
        TypeError,
    )
    if a is not None:
        p = padded_length(call.num_routed, call.num_experts, block_m)
        for name, buf, width in (
            ("sorted_token_ids", a.sorted_token_ids, p),
            ("expert_ids", a.expert_ids, p // block_m),
        ):
            _tensor(f"workspace.align.{name}", buf, 2, (torch.int32,), call.x.device)
            _need(
                buf.shape[0] == call.num_slots and buf.shape[1] >= width and buf.stride(1) == 1,
                lambda name=name, buf=buf, width=width: (
                    f"workspace.align.{name}: shape {tuple(buf.shape)} must be (L={call.num_slots}, >={width}) "
                    "with unit column stride"
                ),
            )
        _tensor("workspace.align.num_tokens_post_padded", a.num_tokens_post_padded, 1, (torch.int32,), call.x.device)
        _need(
            a.num_tokens_post_padded.shape[0] == call.num_slots,
            lambda: f"workspace.align.num_tokens_post_padded: length must be L={call.num_slots}",
        )


def default_slot_ids(num_slots: int, device) -> torch.Tensor:
    """The slot list in upstream order: -1 (base model) first, then every slot. Read-only (cached)."""
    return _cached(
        ("slots", str(device), num_slots), lambda: torch.arange(-1, num_slots, dtype=torch.int32, device=device)
    )


def fused_moe_lora(
    out,
    x,
    topk_ids,
    topk_weights,
    token_lora,
    adapter_enabled,
    lora_a,
    lora_b,
    *,
    mul_routed_weight: bool,
    offset: int = 0,
    layout: str | None = None,
    config: MoeLoraConfig | None = None,
    workspace: Workspace | None = None,
    validate_ids: bool = False,
    deviation: Deviation = NO_DEVIATION,
    quant=None,
) -> torch.Tensor:
    """Apply the LoRA delta of every routed pair to `out` in place and return it.

    layout: "per_token" (x is (M, K)) or "per_routed" (x is (M*k, K)); None derives it from x's rows.
    validate_ids: also check the id ranges (costs a device sync).
    deviation: only for the seeded-bug catalog (kernels.mutants).
    quant: a contract.QuantArgs: lora_a / lora_b hold fp8 or int8 codes with their scales (kernels/moe_lora_quant.py);
    the same pipeline, one kernel (its QUANT switch), no extra launch (w8a8 quantizes activations in the kernel).
    """
    weight_dtypes = None
    if quant is not None:
        from .moe_lora_quant import check_quant, quant_weight_dtypes

        weight_dtypes = quant_weight_dtypes(quant)
    call = prepare(
        out,
        x,
        topk_ids,
        topk_weights,
        token_lora,
        adapter_enabled,
        lora_a,
        lora_b,
        mul_routed_weight=mul_routed_weight,
        offset=offset,
        layout=layout,
        validate_ids=validate_ids,
        weight_dtypes=weight_dtypes,
    )
    if quant is not None:
        check_quant(call, quant)
    if config is None:
        config = default_config(
            call.num_routed, call.rank, call.k_dim, call.n_dim, call.num_experts, call.num_slots, call.num_slices
        )
    check_config(call, config)
    ws = Workspace() if workspace is None else workspace
    _need(
        isinstance(ws, Workspace), lambda: f"workspace: expected kernels.Workspace, got {type(ws).__name__}", TypeError
    )
    _check_workspace(call, ws, config.block_m)
    if call.m == 0:
        return out
    align = moe_lora_align_block_size(
        topk_ids, token_lora, call.num_experts, call.num_slots, config.block_m, ws.align, config.align, deviation
    )
    intermediate = ws.intermediate
    if intermediate is None:
        intermediate = torch.empty((call.num_slices, call.num_routed, call.rank), dtype=torch.float32, device=x.device)
    slot_ids = default_slot_ids(call.num_slots, x.device)
    run_shrink(call, intermediate, align, slot_ids, config, deviation, quant)
    run_expand(call, intermediate, align, slot_ids, config, deviation, quant)
    return out
