"""Kernel speed on production shapes: our fused call vs an upstream-style configuration vs the floor.

    python scripts/bench_kernels.py [--ms 1,16,128,1024,4096] [--slots 4] [--rank 16]

Ours uses kernels.default_config (the per-shape heuristic that the kernels use by default). The
upstream-style configuration is the one SPEC §5 measured: block 16 (shrink BLOCK_N 32, BLOCK_K 64...),
expand BLOCK_N 64, BLOCK_K 16, SPLIT_K 1. The floor moves the touched LoRA weights, the activations and
the output once at the card's peak bandwidth (3.35 TB/s for H100 SXM, 4.8 TB/s for H200).
Each fused call includes align, as a serving engine pays for it. "graph" times replay the call from a
CUDA graph (how engines run decode; no Python or launch overhead), "eager" times include the host side.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name: (E, k, K, N, S, layout, mul_routed_weight)
SHAPES = {
    "qwen3-30b-a3b gate_up": (128, 8, 2048, 768, 2, "per_token", False),
    "qwen3-30b-a3b down": (128, 8, 768, 2048, 1, "per_routed", True),
    "gpt-oss gate_up": (128, 4, 2880, 2880, 2, "per_token", False),
    "mixtral gate_up": (8, 2, 4096, 7168, 2, "per_token", False),
    "deepseek-like gate_up": (64, 6, 2048, 1408, 2, "per_token", False),
}


@dataclass
class Problem:
    """One (shape, M) of the benchmarks: seeded bf16 data on the GPU, checked once."""

    shape: str
    m: int
    dims: tuple  # SHAPES[shape]
    kw: dict  # fused_moe_lora's arguments
    call: object  # kernels.MoeLoraCall
    inter: object  # fp32 intermediate for run_shrink / run_expand
    slots: object  # kernels.default_slot_ids


def problems(ms: list[int], num_slots: int, rank: int):
    """Every shape x M, in a fixed order from one seeded generator (bench_kernels and tune_configs agree)."""
    import torch
    from moe_lora_fuzz.kernels import default_slot_ids, prepare

    dev, dt, L, R = "cuda", torch.bfloat16, num_slots, rank
    g = torch.Generator(device=dev).manual_seed(0)
    for shape, dims in SHAPES.items():
        E, k, K, N, S, layout, mrw = dims
        lora_a = [torch.randn(L, E, R, K, device=dev, dtype=dt, generator=g) * K**-0.5 for _ in range(S)]
        lora_b = [torch.randn(L, E, N, R, device=dev, dtype=dt, generator=g) * R**-0.5 for _ in range(S)]
        for m in ms:
            rows = m * k if layout == "per_routed" else m
            kw = dict(
                out=torch.zeros(m, k, S * N, device=dev, dtype=dt),
                x=torch.randn(rows, K, device=dev, dtype=dt, generator=g),
                topk_ids=torch.stack([torch.randperm(E, device=dev, generator=g)[:k] for _ in range(m)]).int(),
                topk_weights=torch.rand(m, k, device=dev, dtype=dt, generator=g),
                token_lora=torch.randint(0, L, (m,), device=dev, dtype=torch.int32, generator=g),
                adapter_enabled=torch.ones(L, dtype=torch.int32, device=dev),
                lora_a=lora_a,
                lora_b=lora_b,
                mul_routed_weight=mrw,
            )
            yield Problem(
                shape, m, dims, kw, prepare(**kw), torch.zeros(S, m * k, R, device=dev), default_slot_ids(L, dev)
            )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ms", default="1,16,128,1024,4096")
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    a = p.parse_args()
    import torch
    import triton
    from moe_lora_fuzz.kernels import (
        MoeLoraConfig,
        TileConfig,
        default_config,
        fused_moe_lora,
        moe_lora_align_block_size,
        run_expand,
        run_shrink,
    )

    name = torch.cuda.get_device_name()
    bw = 4.8e12 if "H200" in name else 3.35e12
    upstream = MoeLoraConfig(
        block_m=16,
        shrink=TileConfig(block_n=32, block_k=64, group_size_m=8, split_k=1),
        expand=TileConfig(block_n=64, block_k=16, group_size_m=8, split_k=1),
    )
    L, R = a.slots, a.rank
    print(f"## {name}, bf16, L={L}, R={R}; µs per fused call (align + shrink + expand)\n")
    print(
        "| shape | M | ours graph µs | upstream-style graph µs | floor µs | ours/upstream | ours/floor "
        "| ours eager µs | align / shrink / expand µs | our config |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in problems([int(v) for v in a.ms.split(",")], L, R):
        (E, k, K, N, S, _layout, _mrw), m, kw = p.dims, p.m, p.kw
        ids, lanes = kw["topk_ids"], kw["token_lora"]
        ours_cfg = default_config(m * k, R, K, N, E, L, S)

        def run(cfg, kw=kw):
            return lambda: fused_moe_lora(**kw, config=cfg)

        run(ours_cfg)(), run(upstream)()  # compile and fill the constant caches before capture
        torch.cuda.synchronize()
        t_eager = triton.testing.do_bench(run(ours_cfg), warmup=25, rep=100) * 1e3
        t_ours = triton.testing.do_bench_cudagraph(run(ours_cfg), rep=100) * 1e3
        t_up = triton.testing.do_bench_cudagraph(run(upstream), rep=100) * 1e3
        align = moe_lora_align_block_size(ids, lanes, E, L, ours_cfg.block_m)
        phases = [
            lambda: moe_lora_align_block_size(ids, lanes, E, L, ours_cfg.block_m, align),
            lambda: run_shrink(p.call, p.inter, align, p.slots, ours_cfg),
            lambda: run_expand(p.call, p.inter, align, p.slots, ours_cfg),
        ]
        split = " / ".join(f"{triton.testing.do_bench_cudagraph(f, rep=50) * 1e3:.0f}" for f in phases)
        pairs = torch.unique(lanes.long()[:, None] * E + ids.long()).numel()
        elt = 2
        moved = (pairs * S * (R * K + N * R) + kw["x"].shape[0] * K + 2 * m * k * S * N) * elt
        floor = moved / bw * 1e6
        c = ours_cfg
        desc = (
            f"BM{c.block_m} s{c.shrink.block_n}x{c.shrink.block_k}/sk{c.shrink.split_k} "
            f"e{c.expand.block_n}x{c.expand.block_k}/w{c.expand.num_warps}/t{c.expand.n_tiles}"
        )
        print(
            f"| {p.shape} | {m} | {t_ours:.1f} | {t_up:.1f} | {floor:.1f} | {t_ours / t_up:.2f} | "
            f"{t_ours / floor:.2f} | {t_eager:.1f} | {split} | {desc} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
