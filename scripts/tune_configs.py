"""Sweep tile configurations per production shape and print the fastest per stage: the data behind
kernels.default_config.

    python scripts/tune_configs.py [--ms 16,128,1024,4096] [--bms 16,32,64] [--slots 4] [--rank 16]

Shapes and data are those of bench_kernels.py. For each BLOCK_M, align runs once; shrink and expand are
timed apart from a CUDA graph over a fixed list of candidate tiles; the table gives, per (shape, M), the
fastest block_m with its best shrink and expand tiles, and the default configuration's time for each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_kernels import problems  # noqa: E402

# (block_k, split_k, num_warps, num_stages) for shrink; (block_n, num_warps, num_stages, n_tiles) for expand
SHRINK = [
    (64, 1, 4, 3),
    (128, 1, 4, 3),
    (256, 1, 4, 2),
    (128, 2, 4, 3),
    (128, 4, 4, 3),
    (64, 4, 4, 4),
    (128, 1, 8, 3),
    (256, 1, 8, 3),
    (128, 8, 4, 3),
]
EXPAND = [
    (64, 4, 2, 1),
    (128, 4, 2, 1),
    (64, 2, 2, 1),
    (32, 2, 2, 1),
    (64, 4, 2, 2),
    (64, 4, 2, 4),
    (128, 4, 2, 2),
    (128, 8, 2, 2),
    (128, 8, 2, 4),
    (64, 2, 2, 4),
    (32, 4, 2, 4),
    (64, 8, 2, 8),
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ms", default="16,128,1024,4096")
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--bms", default="16,32,64", help="BLOCK_M values to sweep")
    a = p.parse_args()
    import torch
    import triton
    from moe_lora_fuzz.kernels import (
        MoeLoraConfig,
        TileConfig,
        default_config,
        moe_lora_align_block_size,
        run_expand,
        run_shrink,
    )

    L, R = a.slots, a.rank
    print(f"## {torch.cuda.get_device_name()}, bf16, L={L}, R={R}: µs per stage from a CUDA graph\n")
    print(
        "| shape | M | best BM | best shrink (BK, SK, warps, stages) µs "
        "| best expand (BN, warps, stages, n_tiles) µs | best total µs | default total µs (its BM) |"
    )
    print("|---|---|---|---|---|---|---|")
    for p in problems([int(v) for v in a.ms.split(",")], L, R):
        (E, k, K, N, S, _layout, _mrw), m = p.dims, p.m
        ids, lanes = p.kw["topk_ids"], p.kw["token_lora"]
        r_block, cols_block = (min(max(16, triton.next_power_of_2(c)), hi) for c, hi in ((R, 64), (R * S, 128)))

        def timed(stage, align, cfg, p=p) -> float:
            def fn():
                stage(p.call, p.inter, align, p.slots, cfg)

            fn()
            torch.cuda.synchronize()
            return triton.testing.do_bench_cudagraph(fn, rep=30) * 1e3

        best = None
        for bm in [int(v) for v in a.bms.split(",")]:
            align = moe_lora_align_block_size(ids, lanes, E, L, bm)
            sh = []
            for bk, sk, nw, ns in SHRINK:
                cfg = MoeLoraConfig(block_m=bm, shrink=TileConfig(cols_block, bk, 8, sk, nw, ns))
                sh.append((timed(run_shrink, align, cfg), (bk, sk, nw, ns)))
            ex = []
            for bn, nw, ns, nt in EXPAND:
                cfg = MoeLoraConfig(block_m=bm, expand=TileConfig(bn, r_block, 8, 1, nw, ns, nt))
                ex.append((timed(run_expand, align, cfg), (bn, nw, ns, nt)))
            s_best, e_best = min(sh), min(ex)
            if best is None or s_best[0] + e_best[0] < best[1][0][0] + best[1][1][0]:
                best = (bm, (s_best, e_best))
        d = default_config(m * k, R, K, N, E, L, S)
        align = moe_lora_align_block_size(ids, lanes, E, L, d.block_m)
        t_def = timed(run_shrink, align, d) + timed(run_expand, align, d)
        bm, (s_best, e_best) = best
        print(
            f"| {p.shape} | {m} | {bm} | {s_best[1]} {s_best[0]:.1f} | {e_best[1]} {e_best[0]:.1f} | "
            f"{s_best[0] + e_best[0]:.1f} | {t_def:.1f} (BM{d.block_m}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
