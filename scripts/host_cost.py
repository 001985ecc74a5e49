"""Fixed per-call costs of our fused call, measured on CPU: device launches (Triton kernels and torch ops that would
each be a CUDA kernel on a GPU), host syncs, and the host's own time with every Triton launch stubbed out.

    python scripts/host_cost.py [--m 1] [--calls 50] [--rounds 7]

Runs under Triton's interpreter (TRITON_INTERPRET=1, set here when no GPU is visible) on the bench_quant.py shapes
(K=2048, N=1536, E=128, top-k 8, R=16, L=4, two slices, bf16) for unquantized bf16 and each quantized scheme.
The Triton kernels are replaced by a recorder that counts launches and returns at once, and align is forced onto
its Triton form (as on a GPU), so what is timed is the wrapper's Python and its torch ops; torch ops are counted
with torch.profiler (top-level aten ops that produce or modify a tensor: each is at least one kernel on a GPU).
Host time is this process's CPU time (time.process_time: waiting for a loaded machine does not count), the best of
several rounds; relative only (CPU torch ops are not CUDA launches); the counts are what carries over to the GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TRITON_INTERPRET", "1")


# torch ops that only make views or read metadata: no kernel on a GPU
VIEWS = {
    "aten::view",
    "aten::reshape",
    "aten::slice",
    "aten::select",
    "aten::as_strided",
    "aten::expand",
    "aten::unsqueeze",
    "aten::squeeze",
    "aten::t",
    "aten::transpose",
    "aten::permute",
    "aten::alias",
    "aten::detach",
    "aten::lift_fresh",
    "aten::_reshape_alias",
    "aten::empty",
    "aten::empty_strided",
    "aten::empty_like",
    "aten::resize_",
    "aten::result_type",
    "aten::_unsafe_view",
    "aten::item",
    "aten::_local_scalar_dense",
}
SYNCS = {"aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero"}
SCHEMES = (
    ("none", "tensor", "dynamic"),
    ("fp8_w8a8", "block", "dynamic"),
    ("int8_w8a8", "channel", "dynamic"),
    ("int8_w8a8", "channel", "static"),
    ("int8_w8a16", "channel", "dynamic"),
)


class _Stub:
    """A Triton kernel that counts its launches and does nothing (grid[...](...) -> None)."""

    def __init__(self, name: str, counts: Counter):
        self.name, self.counts = name, counts

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.counts[self.name] += 1

        return launch


def _stub_kernels(counts: Counter) -> None:
    import moe_lora_fuzz.kernels.align as align
    import moe_lora_fuzz.kernels.moe_lora as moe_lora

    for module in (moe_lora, align):
        for name in [n for n in vars(module) if n.endswith("_kernel")]:
            setattr(module, name, _Stub(name, counts))
    try:  # the quantized kernel where it is a separate one
        import moe_lora_fuzz.kernels.moe_lora_quant as mq

        for name in [n for n in vars(mq) if n.endswith("_kernel")]:
            setattr(mq, name, _Stub(name, counts))
    except ImportError:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    from moe_lora_fuzz.contract.launch import MoeLoraConfig
    from moe_lora_fuzz.fuzz.data.tensors import materialize
    from moe_lora_fuzz.fuzz.runtime.interpreter import install
    from moe_lora_fuzz.kernels import default_config, fused_moe_lora
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_quant import _case

    install()
    counts: Counter = Counter()
    _stub_kernels(counts)
    print(f"M={a.m}, bench_quant shapes, Triton launches stubbed; CPU host time per call (relative only)\n")
    print("| scheme | Triton launches | torch ops | leaf kernels | host syncs | host CPU µs/call (best) | torch ops |")
    print("|---|---|---|---|---|---|---|")
    for quant, group, act in SCHEMES:
        c = _case(a.m, quant, group, act)
        cfg = default_config(a.m * 8, 16, 2048, 1536, 128, 4, 2)
        cfg = MoeLoraConfig(block_m=cfg.block_m, shrink=cfg.shrink, expand=cfg.expand, align="triton")
        kw = materialize(c.replace(config=cfg), "cpu").op_kwargs()
        fused_moe_lora(**kw, config=cfg)  # warm the constant caches
        counts.clear()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fused_moe_lora(**kw, config=cfg)
        launches = sum(counts.values())
        ops: Counter = Counter()
        for e in prof.events():
            if e.cpu_parent is None and e.name.startswith("aten::"):
                ops[e.name] += 1
        kernels = {k: v for k, v in ops.items() if k not in VIEWS}
        leaves = sum(
            1
            for e in prof.events()
            if e.name.startswith("aten::")
            and e.name not in VIEWS
            and not any(c.name.startswith("aten::") for c in e.cpu_children)
        )
        syncs = sum(v for k, v in ops.items() if k in SYNCS)
        rounds = []  # the quickest of several rounds: what the code costs, not what the machine's load added
        for _ in range(a.rounds):
            t0 = time.process_time()
            for _ in range(a.calls):
                fused_moe_lora(**kw, config=cfg)
            rounds.append((time.process_time() - t0) / a.calls * 1e6)
        us = min(rounds)
        desc = ", ".join(f"{k.removeprefix('aten::')} {v}" for k, v in sorted(kernels.items()))
        name = "bf16" if quant == "none" else f"{quant}/{group}/{act}"
        print(f"| {name} | {launches} | {sum(kernels.values())} | {leaves} | {syncs} | {us:.0f} | {desc} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
