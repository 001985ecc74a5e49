"""Where a fused call's device time goes, kernel by kernel (torch.profiler), for one production shape.

    python scripts/profile_call.py [--shape "qwen3-30b-a3b gate_up"] [--m 4096] [--iters 20]

Uses the data and default configuration of bench_kernels.py; prints device µs per call for each kernel.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_kernels import SHAPES, problems  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="qwen3-30b-a3b gate_up", choices=sorted(SHAPES))
    p.add_argument("--m", type=int, default=4096)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    a = p.parse_args()
    import torch
    from moe_lora_fuzz.kernels import fused_moe_lora
    from torch.profiler import ProfilerActivity, profile

    prob = next(q for q in problems([a.m], a.slots, a.rank) if q.shape == a.shape)
    for _ in range(3):  # compile and warm up outside the profile
        fused_moe_lora(**prob.kw)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(a.iters):
            fused_moe_lora(**prob.kw)
        torch.cuda.synchronize()
    rows = [
        (e.key, e.device_time_total / a.iters, e.count // a.iters)
        for e in prof.key_averages()
        if e.device_time_total > 0
    ]
    print(f"## {torch.cuda.get_device_name()}: {a.shape}, M={a.m}, device µs per fused call\n")
    print("| kernel | µs | launches |\n|---|---|---|")
    for key, us, n in sorted(rows, key=lambda r: -r[1]):
        print(f"| {key[:60]} | {us:.1f} | {n} |")
    print(f"| total | {sum(r[1] for r in rows):.1f} | |")


if __name__ == "__main__":
    main()
