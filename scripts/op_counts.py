"""Torch operations and host reads per case and per phase of the oracle: the GPU loop's host cost, measured on a CPU.

    python scripts/op_counts.py [--cases N] [--profile nightly|tiny] [--impl NAME] [--seed S] [--fused on|off]

The fuzz loop on a GPU is bound by its host: every torch operation costs a dispatch and a kernel launch (several
microseconds) and every read of a device value into Python (item, bool, tolist, numpy, cpu) waits for the GPU.
Both counts are the same on a CPU, where they can be measured exactly: this script judges the campaign's case
stream (`nightly`: the GPU profile's sizes and compile classes) in-process with a plain-torch implementation, and
counts, inside each phase of fuzz.runtime.phases, the aten operations (views apart: they launch nothing) and the
host reads. A host read counts as a sync whatever the tensor's device (on a GPU the small integer inputs of a
host-built case are already on the host: there it costs nothing). The implementation's own phase is left out of
the totals (its operations are its own). Wall times are the CPU's, not the GPU's: only the counts transfer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRITON_INTERPRET", "1")

SYNC_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=40)
    p.add_argument("--profile", default="nightly", choices=("nightly", "tiny"))
    p.add_argument("--impl", default="tests/example_impl.py:torch_moe_lora")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--gpu-rules",
        action="store_true",
        help="judge as on a GPU: the naive cross-check sampled (compare.naive_due), fp64 in CUDA_CHUNK_ELEMENTS chunks",
    )
    p.add_argument(
        "--fused",
        choices=("auto", "on", "off"),
        default="auto",
        help="materialise with fuzz.data.fused_gen (on: under the interpreter here; each launch counts as 3 "
        "operations, its table's creation, copy to the GPU and the launch) or the torch path; auto: as on this "
        "machine (the CPU: torch)",
    )
    a = p.parse_args()
    import dataclasses

    import torch
    from moe_lora_fuzz.fuzz.judgement import oracle
    from moe_lora_fuzz.fuzz.runtime import phases
    from moe_lora_fuzz.fuzz.space.generate import CPU_SIZES, GPU_SIZES, draw
    from torch.utils._python_dispatch import TorchDispatchMode

    sizes = GPU_SIZES if a.profile == "nightly" else dataclasses.replace(CPU_SIZES, m=16, k_dim=64, n_dim=48, rank=16)
    interpreter = a.profile != "nightly"
    cases = [draw(sizes, (a.seed * 1_000_003 + i) % 2**63, i, interpreter=interpreter) for i in range(a.cases)]
    impl = oracle.resolve(a.impl)
    if a.gpu_rules:
        from moe_lora_fuzz.fuzz.judgement import compare
        from moe_lora_fuzz.reference import fp64

        cpu_rule = compare.naive_due
        compare.naive_due = lambda case, device: cpu_rule(case, "cuda")
        oracle.naive_due = compare.naive_due
        fp64.CHUNK_ELEMENTS = fp64.CUDA_CHUNK_ELEMENTS
    ops, views, syncs = Counter(), Counter(), Counter()
    paused = []
    if a.fused != "auto":
        from moe_lora_fuzz.fuzz.data import fused_gen

        fused_gen.FORCE = a.fused == "on"
        inner_launch = fused_gen.launch

        def launch(*args, **kw):
            ops[where()] += 3  # the table (a host op), its copy to the GPU, the kernel
            paused.append(1)
            try:
                return inner_launch(*args, **kw)
            finally:
                paused.pop()

        fused_gen.launch = launch
    spent = defaultdict(float)

    def where() -> str:
        return phases._stack[-1][0] if phases._stack else "outside"

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if paused:  # inside a fused generation launch (the interpreter's own work)
                return func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name == "_local_scalar_dense":
                syncs[where()] += 1
            elif torch.Tag.core in func.tags or not func.is_view:
                (views if func.is_view else ops)[where()] += 1
            return func(*args, **(kwargs or {}))

    originals = {m: getattr(torch.Tensor, m) for m in SYNC_METHODS}

    def counted(method):
        inner = originals[method]

        def wrapper(self, *args, **kw):
            if method not in ("__bool__", "__int__", "__float__", "item"):  # those reach _local_scalar_dense
                syncs[where()] += 1
            return inner(self, *args, **kw)

        return wrapper

    for m in SYNC_METHODS:
        setattr(torch.Tensor, m, counted(m))
    verdicts = Counter()
    with Count():
        for c in cases:
            t0 = time.perf_counter()
            with phases.phase("oracle"):
                verdicts[oracle.check(c, a.impl, "cpu", impl=impl).kind] += 1
            spent["all"] += time.perf_counter() - t0
    for m, f in originals.items():
        setattr(torch.Tensor, m, f)
    n = len(cases)
    print(
        f"## Per case, {n} cases of the {a.profile} stream (seed {a.seed}), {a.impl}, on the CPU"
        f"{' with the GPU rules' if a.gpu_rules else ''}; "
        f"verdicts {dict(verdicts)}"
    )
    print(
        f"wall {1000 * spent['all'] / n:.1f} ms per case on this CPU "
        "(loaded machines vary: compare counts, not times)\n"
    )
    print("| phase | torch ops | views | host reads (syncs) |\n|---|---|---|---|")
    keys = sorted(set(ops) | set(views) | set(syncs), key=lambda k: -ops[k])
    total = Counter()
    for k in keys:
        print(f"| {k} | {ops[k] / n:.1f} | {views[k] / n:.1f} | {syncs[k] / n:.2f} |")
        if not k.endswith("/impl") and "/impl/" not in k:
            total["ops"] += ops[k]
            total["views"] += views[k]
            total["syncs"] += syncs[k]
    print(
        f"| **all but the implementation** | **{total['ops'] / n:.1f}** | **{total['views'] / n:.1f}** "
        f"| **{total['syncs'] / n:.2f}** |"
    )


if __name__ == "__main__":
    main()
