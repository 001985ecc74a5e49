"""Cases per second of the fuzz loop, and where the time goes.

    python scripts/bench_cases.py [--device cpu|cuda] [--cases N] [--profile tiny|nightly] [--materialise-only]
                                  [--host-profile] [--rules current|before-29] [--fresh] [--twins]

Runs the oracle in-process (no worker) on a campaign-like case stream (in compile classes on a GPU): `tiny`
(default) restricted to tiny shapes, `nightly` at the nightly profile's GPU sizes (GPU_SIZES, its configuration
pool). A first pass compiles, three more give the steady-state rate (their median), a last one times each phase
with a device sync after each: materialise (inputs and guard bands), kernels (align + shrink + expand), fp64 and
naive references, judge, and the rest (oracle bookkeeping). --materialise-only times materialise alone (what a
CPU machine can measure at nightly sizes: the interpreter cannot run those kernels in reasonable time).
--host-profile adds cProfile's top functions of one more pass. --rules before-29 judges as before issue 29 (naive
cross-check on every case, the fp64 reference's weights gathered per pair in CPU-sized chunks, three host copies for
the data features), for a same-machine before/after. --fresh: each timed pass judges new cases (new shapes and
data in the first pass's compile classes), as a campaign does, instead of the first pass's again; the GPU's
allocator segments (cudaMalloc calls) per case are printed either way.
"""

from __future__ import annotations

import argparse
import itertools
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
    p.add_argument("--profile", default="tiny", choices=("tiny", "nightly"))
    p.add_argument("--materialise-only", action="store_true")
    p.add_argument("--impl", default="ours", help="any --impl value (a release form loads from $MOE_LORA_FUZZ_CACHE)")
    p.add_argument("--twins", action="store_true", help="run the metamorphic twins on the cases a campaign would")
    p.add_argument("--fresh", action="store_true", help="timed passes judge new cases of the same compile classes")
    p.add_argument("--host-profile", action="store_true", help="also print cProfile's top functions of a pass")
    p.add_argument(
        "--rules",
        default="current",
        choices=("current", "before-29"),
        help="before-29: judge as before issue 29 (the naive cross-check on every case within NAIVE_LIMIT, the fp64 "
        "reference gathering weights per pair in CPU-sized chunks, three host copies for the data features): a "
        "same-machine baseline",
    )
    a = p.parse_args()
    import torch
    from moe_lora_fuzz.contract import resolve_device

    device = resolve_device(a.device)
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    from moe_lora_fuzz.fuzz.runtime.cpus import worker_threads

    threads = worker_threads(device)
    if threads:  # as a campaign's worker
        torch.set_num_threads(threads)
    import dataclasses

    from moe_lora_fuzz.fuzz.judgement import compare, oracle
    from moe_lora_fuzz.fuzz.space.generate import (
        CPU_SIZES,
        GPU_SIZES,
        Classes,
        RandomSource,
        class_of,
        draw,
        generate,
        prototype,
    )

    if a.profile == "nightly":
        sizes, shapes = GPU_SIZES, "nightly sizes (GPU_SIZES: M<=600, K<=1100, N<=600, R<=72, E<=64)"
        n = a.cases or (20 if device == "cpu" else 200)
    else:
        sizes = dataclasses.replace(
            CPU_SIZES,
            **TINY,
            blocks=(16, 32),
            block_ms=(16,),
            split_k=2,
            classes=Classes() if device == "cuda" else None,
        )
        shapes = "tiny cases (M<=16, K<=64, N<=48, R<=16)"
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

    from moe_lora_fuzz.fuzz.execution.worker import CampaignConfig, runs_twin
    from moe_lora_fuzz.fuzz.targets.impls import resolve

    impl = resolve(a.impl)
    twin_cfg = CampaignConfig(device=device, profile="nightly")
    if a.rules == "before-29":
        from moe_lora_fuzz.fuzz.data.tensors import HostInputs
        from moe_lora_fuzz.reference import fp64

        oracle.naive_due = lambda case, device: True
        fp64.CUDA_CHUNK_ELEMENTS = fp64.CHUNK_ELEMENTS
        fp64._tile = lambda pairs, groups: 1  # one block per pair: the per-pair weight gathers of before
        HostInputs.prefetch = lambda self, names: None
    interpreter = device == "cpu" and a.profile == "tiny"  # the nightly stream is the GPU's
    cases = [impl.fit(draw(sizes, i, i, interpreter=interpreter)) for i in range(n)]  # in compile classes on a GPU
    first = list(cases)

    def renew(k: int) -> None:
        """--fresh: the k-th timed pass's cases, new shapes and data in the classes of the first pass's (a case of
        a class of its own is judged again: a new one would compile)."""
        if not a.fresh:
            return
        for i in range(n):
            cls, seed = class_of(sizes, i, i), i + 1_000_003 * k
            if cls is not None:
                proto = prototype(sizes, interpreter, cls)
                cases[i] = impl.fit(
                    generate(RandomSource(seed), sizes, interpreter=interpreter, seed=seed, proto=proto)
                )
            else:
                cases[i] = first[i]

    def segments() -> int:
        return torch.cuda.memory_stats().get("segment.all.allocated", 0) if device == "cuda" else 0

    if a.materialise_only:
        from moe_lora_fuzz.fuzz.data.tensors import materialize

        for c in cases[:3]:
            materialize(c, device)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            for c in cases:
                materialize(c, device)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        t = sorted(times)[1]
        print(
            f"materialise only, {n} {shapes} on {device}: {1000 * t / n:.2f} ms per case "
            f"(median of 3 passes: {', '.join(f'{1000 * x / n:.2f}' for x in times)})"
        )
        return

    passes = itertools.count(1)  # the timed passes' numbers: --fresh draws each its own cases

    def one_pass(implementation, timed_pass: bool = True) -> tuple[float, int]:
        if timed_pass:
            renew(next(passes))
        t0 = time.perf_counter()
        fails = sum(
            oracle.check(c, a.impl, device, impl=implementation, metamorphic=a.twins and runs_twin(twin_cfg, c)).failed
            for c in cases
        )
        return time.perf_counter() - t0, fails

    cold, fails = one_pass(impl, timed_pass=False)  # every kernel variant compiles (or loads from Triton's disk cache)
    print(f"first pass (compiling): {n / cold:.1f} cases/s", flush=True)
    # steady state as a campaign runs it (no timers, no extra syncs): the median of three passes
    malloc0 = segments()
    steady = sorted(one_pass(impl) for _ in range(3))
    mallocs = (segments() - malloc0) / (3 * n)
    rates = [n / t for t, _ in steady]
    fails += sum(f for _, f in steady)
    if a.host_profile:  # where the host's time goes in one more pass, before the phase timers (and their syncs) go in
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        one_pass(impl)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    # a last pass times each phase, with a device sync after each
    compare.materialize = timed("materialise", compare.materialize)
    compare.moe_lora_fp64 = timed("fp64", compare.moe_lora_fp64)
    compare.moe_lora_naive = timed("naive", compare.moe_lora_naive)
    oracle._judge = timed("judge", oracle._judge)
    impl.run = timed("kernels", impl.run)
    wall, last_fails = one_pass(impl)
    fails += last_fails
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    print(
        f"## fuzz loop of {a.impl} on {name}, steady state: {n} {shapes}, {fails} failures in 5 passes, rules {a.rules}"
    )
    print(
        f"steady state (kernels compiled): {rates[1]:.1f} cases/s ({1000 * steady[1][0] / n:.2f} ms per case), "
        f"median of 3 passes ({min(rates):.1f} to {max(rates):.1f}); "
        f"{'new cases' if a.fresh else 'the same cases'} each pass, twins {'on' if a.twins else 'off'}, "
        f"{mallocs:.2f} allocator segments (cudaMalloc) per case"
    )
    print(f"with a sync after every phase: {n / wall:.1f} cases/s\n")
    print("| phase (synced) | ms per case | share |\n|---|---|---|")
    spent["rest"] = wall - sum(spent.values())  # oracle bookkeeping: snapshot, bound, diagnosis, twins
    for k in ("materialise", "kernels", "fp64", "naive", "judge", "rest"):
        print(f"| {k} | {1000 * spent[k] / n:.2f} | {100 * spent[k] / wall:.0f}% |")
    print(f"| total | {1000 * wall / n:.2f} ms per case | {n / wall:.1f} cases/s |")


if __name__ == "__main__":
    main()
