"""Seeded-bug variants of our kernels ("mutants"), one per known bug of this kernel family.

A mutant is a Deviation: a set of switches, each read at the one place in the launch path where the
buggy upstream code differed. The correct kernels run with NO_DEVIATION. Nothing here copies a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Deviation:
    row_index_from_routed_weight: bool = False  # shrink row = f // (1 if mul_routed_weight else k)
    expand_grid_ignores_split_k: bool = False  # expand grid not multiplied by SPLIT_K
    slot_grid_short: bool = False  # the kernel is told one slot fewer than the slot list holds
    unrounded_pad_stride: bool = False  # align and kernels disagree on P
    ignore_adapter_enabled: bool = False  # disabled adapters treated as enabled
    skip_intermediate_zeroing: bool = False  # split-K shrink accumulates into garbage
    drop_k_mask: bool = False  # K-remainder mask dropped on loads
    routed_weight_in_shrink: bool = False  # routed weight applied in shrink and again in expand
    fp32_dot_tf32: bool = False  # fp32 dots run in TF32 (Triton's default) instead of ieee
    scatter_grid_off_by_one: bool = False  # align scatter grid cdiv(M*k - 1, CHUNK): a lone last pair is lost
    scatter_columns_unpadded: bool = False  # align scatter indexes group columns with E, not its power of two
    full_last_group: bool = False  # grouped order treats its last, partial GROUP_SIZE_M group as full
    launch_bound_per_expert: bool = False  # grid m bound counts E groups instead of L*E
    # quantized kernels (kernels/moe_lora_quant.py)
    quant_scale_next_block: bool = False  # weight scale of the next K-block
    quant_channel_scale_by_k: bool = False  # weight scale row indexed by k instead of n
    quant_scale_slot0: bool = False  # every slot reads slot 0's weight scales
    quant_act_scale_ignored: bool = False  # w8a8 activation scale never applied


NO_DEVIATION = Deviation()


@dataclass(frozen=True)
class Mutant:
    id: str
    deviation: Deviation
    doc: str
    # the cases its bug needs, as an implementation's declaration (fuzz.capabilities): the quantized mutants
    # declare quantization, so campaigns give them quantized cases
    capabilities: dict | None = None


QUANT_ALL = {"quant": ["fp8_w8a8", "int8_w8a8", "int8_w8a16"]}  # what our quantized kernels declare


MUTANTS: dict[str, Mutant] = {
    m.id: m
    for m in (
        Mutant(
            "topk-row-index",
            Deviation(row_index_from_routed_weight=True),
            "Shrink reads row f // 1 instead of f // k whenever mul_routed_weight is set, assuming that flag "
            "implies the per-routed-token layout; on a per-token (M, K) input rows up to M*k-1 are read. "
            "Upstream: sglang PR #19711 review.",
        ),
        Mutant(
            "expand-splitk-grid",
            Deviation(expand_grid_ignores_split_k=True),
            "Expand honours SPLIT_K inside the kernel but its grid is not multiplied by SPLIT_K, so only "
            "the first K-chunk of the reduction is computed. Upstream: sglang PR #19711 review; vLLM #32882 "
            "pinned expand SPLIT_K to 1.",
        ),
        Mutant(
            "lora-grid-short",
            Deviation(slot_grid_short=True),
            "The slot list holds -1 (base model) first and then every slot, but the launch covers one "
            "entry fewer: the last slot silently gets no delta. Upstream: vLLM #32277 (issue #32235), where "
            "the grid's slot axis was one program short.",
        ),
        Mutant(
            "pad-size-mismatch",
            Deviation(unrounded_pad_stride=True),
            "Align writes slot rows of length P = round_up(M*k + E*(BLOCK_M-1), BLOCK_M) while the kernels "
            "stride the rows by the unrounded length: slots after the first read another slot's tokens. "
            "Upstream: vLLM #27311.",
        ),
        Mutant(
            "disabled-adapter-written",
            Deviation(ignore_adapter_enabled=True),
            "Tokens mapped to a disabled adapter still receive a delta. Upstream: vLLM "
            "test_moe_lora_align_sum.py (disabled adapter case).",
        ),
        Mutant(
            "splitk-unzeroed",
            Deviation(skip_intermediate_zeroing=True),
            "Split-K shrink atomically accumulates into an intermediate that was never zeroed. Class of bug: "
            "atomic accumulation needs a zero-initialised target.",
        ),
        Mutant(
            "k-tail-unmasked",
            Deviation(drop_k_mask=True),
            "The K-remainder mask is dropped on loads: every row read runs past its end when K is not a "
            "multiple of BLOCK_K*SPLIT_K. Class of bug.",
        ),
        Mutant(
            "routed-weight-twice",
            Deviation(routed_weight_in_shrink=True),
            "The routed weight is applied in shrink and again in expand: a pure scale error that "
            "cosine-similarity checks miss. Class of bug.",
        ),
        Mutant(
            "fp32-silent-tf32",
            Deviation(fp32_dot_tf32=True),
            "fp32 dots keep Triton's default input precision, TF32 (10-bit mantissa inputs), instead of ieee: "
            "about 1e-3 relative error where fp32 promises 1e-7. Common in released kernels (SPEC §5); visible "
            "on CPU only through the TF32 emulation of fuzz/interpreter.py.",
        ),
        Mutant(
            "align-chunk-plus-one",
            Deviation(scatter_grid_off_by_one=True),
            "The Triton align's scatter grid is cdiv(M*k - 1, CHUNK) instead of cdiv(M*k, CHUNK): when M*k is "
            "one past a multiple of the chunk, the last pair is never scattered and its slot holds padding, so "
            "it gets no delta. Off-by-one at a derived-size boundary (class of bug).",
        ),
        Mutant(
            "align-npow2-experts",
            Deviation(scatter_columns_unpadded=True),
            "The Triton align's scatter indexes its per-group columns with E where count and layout use E "
            "rounded up to a power of two: identical for power-of-two E, wrong positions for slots after the "
            "first (or chunks after the first) otherwise. Class of bug (padded vs real extent).",
        ),
        Mutant(
            "grouped-tail-full",
            Deviation(full_last_group=True),
            "The GROUP_SIZE_M-swizzled tile order treats its last group as full when fewer m blocks remain: "
            "(m, n) tiles of the real blocks there are never computed once a row has several n tiles. Seen only "
            "when the last group holds real blocks (tiny batches). Class of bug (Triton matmul tutorial order).",
        ),
        Mutant(
            "launch-bound-per-expert",
            Deviation(launch_bound_per_expert=True),
            "The launch bound on used blocks counts E groups, Mk // BM + min(E, Mk), instead of L*E (slot, "
            "expert) groups: when more groups are non-empty the last blocks never run. Upstream kin: vLLM #40131 "
            "(align grid off by one).",
        ),
        Mutant(
            "quant-scale-next-block",
            Deviation(quant_scale_next_block=True),
            "A weight's scale is read from the next block along K (k // block_k + 1): with block scales every "
            "element gets its neighbour block's scale, the last block one past the row. Class of bug (scale "
            "indexing; vLLM 0.34 fused_moe_lora_fp8_op.py passes scale strides and group sizes by hand).",
            {**QUANT_ALL, "quant_groups": ["block"]},
        ),
        Mutant(
            "quant-channel-scale-by-k",
            Deviation(quant_channel_scale_by_k=True),
            "A per-output-channel scale indexed along K instead of N (the (stride_bsk, stride_bsn) pair swapped): "
            "output column n gets the scale of row k. Class of bug (swapped scale strides).",
            {**QUANT_ALL, "quant_groups": ["channel", "block"]},
        ),
        Mutant(
            "quant-scale-slot0",
            Deviation(quant_scale_slot0=True),
            "Every LoRA slot reads slot 0's weight scales (the slot stride of the scale tensor dropped): right "
            "whenever one slot is in use. Class of bug.",
            QUANT_ALL,
        ),
        Mutant(
            "quant-act-scale-ignored",
            Deviation(quant_act_scale_ignored=True),
            "The w8a8 activation scale is never applied: the dot of codes is scaled by the weight scale only. "
            "vLLM 0.34's _fused_moe_lora_kernel_fp8 takes a_scale_ptr and never reads it. Class of bug.",
            {"quant": ["fp8_w8a8", "int8_w8a8"]},
        ),
    )
}
