"""Cases per second of the fuzz loop on tiny shapes, and where the time goes.

    python scripts/bench_cases.py [--device cpu|cuda] [--cases N] [--procs P]

Runs the oracle in-process (no worker) on the campaign's case stream restricted to tiny shapes, timing
each phase: materialise (inputs and guard bands), implementation (align + kernels), references (fp64,
plus naive on small cases), judging. With --procs P, P processes share the device, each checking every
P-th case, and the rate is all cases over the slowest process's time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TINY = dict(m=16, top_k=2, experts=4, slots=2, rank=16, k_dim=64, n_dim=48)


def run_part(part: int, parts: int, n: int, device: str, barrier=None, results=None):
    """Check cases part, part + parts, ... of the first n twice: once compiling, once timed (after every
    process has compiled, when barrier is given). Returns (cases, wall s, {phase: s}, failures, cold s)."""
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import dataclasses

    import torch

    from fuzz import oracle
    from fuzz.case import CPU_SIZES, RandomSource, generate
    sizes = dataclasses.replace(CPU_SIZES, **TINY, blocks=(16, 32), block_ms=(16,), split_k=2)
    spent = defaultdict(float)

    def timed(name, fn):
        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                if device == "cuda":
                    torch.cuda.synchronize()
                spent[name] += time.perf_counter() - t0
        return wrapper

    oracle.materialize = timed("materialise", oracle.materialize)
    oracle.moe_lora_fp64 = timed("reference fp64", oracle.moe_lora_fp64)
    oracle.moe_lora_naive = timed("reference naive", oracle.moe_lora_naive)
    oracle._judge = timed("judge", oracle._judge)
    impl = oracle.resolve("ours")
    impl_timed = timed("implementation", impl)
    cases = [generate(RandomSource(i), sizes, interpreter=device == "cpu", seed=i) for i in range(part, n, parts)]
    t0 = time.perf_counter()
    for c in cases:  # first pass: every kernel variant compiles (or loads from Triton's disk cache)
        oracle.check(c, "ours", device, impl=impl)
    cold = time.perf_counter() - t0
    if barrier is not None:
        barrier.wait()
    spent.clear()
    t0 = time.perf_counter()
    fails = sum(oracle.check(c, "ours", device, impl=impl_timed).failed for c in cases)
    out = (len(cases), time.perf_counter() - t0, dict(spent), fails, cold)
    if results is not None:
        results.put(out)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--cases", type=int, default=None)
    p.add_argument("--procs", type=int, default=1,
                   help="fuzz processes sharing the device (the loop is bound by host work; nightly.py --per-gpu)")
    a = p.parse_args()
    import torch
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    n = a.cases or (30 if device == "cpu" else 600)
    if a.procs == 1:
        parts = [run_part(0, 1, n, device)]
    else:
        import multiprocessing as mp
        ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
        barrier, results = ctx.Barrier(a.procs), ctx.Queue()
        procs = [ctx.Process(target=run_part, args=(i, a.procs, n, device, barrier, results))
                 for i in range(a.procs)]
        for pr in procs:
            pr.start()
        parts = [results.get() for _ in procs]
        for pr in procs:
            pr.join()
    cases = sum(r[0] for r in parts)
    wall = max(r[1] for r in parts)
    cold = max(r[4] for r in parts)
    spent = defaultdict(float)
    for r in parts:
        for k, v in r[2].items():
            spent[k] += v
    print(f"first pass (compiling): {cases / cold:.1f} cases/s", flush=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    print(f"## fuzz loop on {name}, steady state: {cases} tiny cases (M<=16, K<=64, N<=48, R<=16) in "
          f"{a.procs} process(es), {sum(r[3] for r in parts)} failures")
    print(f"steady state (kernels compiled): {cases / wall:.1f} cases/s\n")
    print("| phase | ms per case (per process) | share |\n|---|---|---|")
    busy = wall * a.procs
    for k, v in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {1000 * v / cases * a.procs:.2f} | {100 * v / busy:.0f}% |")
    other = busy - sum(spent.values())
    print(f"| other (oracle bookkeeping) | {1000 * other / cases * a.procs:.2f} | {100 * other / busy:.0f}% |")


if __name__ == "__main__":
    main()
