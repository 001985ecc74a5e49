"""Cases per second of the fuzz loop on tiny shapes, and where the time goes.

    python scripts/bench_cases.py [--device cpu|cuda] [--cases N]

Runs the oracle in-process (no worker) on the campaign's case stream restricted to tiny shapes: a first
pass compiles, three more give the steady-state rate (their median), a last one times each phase with a
device sync after each: materialise (inputs and guard bands), implementation (align + kernels),
references (fp64, plus naive on small cases), judging.
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--cases", type=int, default=None)
    a = p.parse_args()
    import torch
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import dataclasses

    from fuzz import oracle
    from fuzz.case import CPU_SIZES, RandomSource, generate
    sizes = dataclasses.replace(CPU_SIZES, **TINY, blocks=(16, 32), block_ms=(16,), split_k=2)
    n = a.cases or (30 if device == "cpu" else 600)
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

    impl = oracle.resolve("ours")
    cases = [generate(RandomSource(i), sizes, interpreter=device == "cpu", seed=i) for i in range(n)]

    def one_pass(implementation) -> tuple[float, int]:
        t0 = time.perf_counter()
        fails = sum(oracle.check(c, "ours", device, impl=implementation).failed for c in cases)
        return time.perf_counter() - t0, fails

    cold, fails = one_pass(impl)  # every kernel variant compiles (or loads from Triton's disk cache)
    print(f"first pass (compiling): {n / cold:.1f} cases/s", flush=True)
    # steady state as a campaign runs it (no timers, no extra syncs): the median of three passes
    steady = sorted(one_pass(impl) for _ in range(3))
    rates = [n / t for t, _ in steady]
    fails += sum(f for _, f in steady)
    # a last pass times each phase, with a device sync after each
    oracle.materialize = timed("materialise", oracle.materialize)
    oracle.moe_lora_fp64 = timed("reference fp64", oracle.moe_lora_fp64)
    oracle.moe_lora_naive = timed("reference naive", oracle.moe_lora_naive)
    oracle._judge = timed("judge", oracle._judge)
    wall, last_fails = one_pass(timed("implementation", impl))
    fails += last_fails
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    print(f"## fuzz loop on {name}, steady state: {n} tiny cases (M<=16, K<=64, N<=48, R<=16), "
          f"{fails} failures in 5 passes")
    print(f"steady state (kernels compiled): {rates[1]:.1f} cases/s ({1000 * steady[1][0] / n:.2f} ms per case), "
          f"median of 3 passes ({min(rates):.1f} to {max(rates):.1f})")
    print(f"with a sync after every phase: {n / wall:.1f} cases/s\n")
    print("| phase (synced) | ms per case | share |\n|---|---|---|")
    for k, v in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {1000 * v / n:.2f} | {100 * v / wall:.0f}% |")
    other = wall - sum(spent.values())
    print(f"| other (oracle bookkeeping) | {1000 * other / n:.2f} | {100 * other / wall:.0f}% |")


if __name__ == "__main__":
    main()
