"""Does what runs beside the fuzz loop slow it down? The in-process loop (scripts/bench_cases.py) with N idle
neighbours of each kind, one kind after the other:

    python scripts/bench_neighbours.py [--kinds none,sleep,cuda,helpers] [--count 12] [--impl ours] -- BENCH_CASES_ARGS

- none: nothing beside it (the baseline);
- sleep: N processes that imported torch and sleep;
- cuda: N processes that made a CUDA context on the same GPU and sleep;
- helpers: N compile-ahead helpers (fuzz.campaign.precompile), started, ready, given no case;
- busy: N helpers given new campaign cases, --rate a second in all (a campaign's helpers took about one a second);
- pulse: N processes that each run a small kernel on the same GPU ten times a second;
- spin: N processes that keep a CPU busy at nice 10 (as helpers run);
- ctxspin: the same, each holding a CUDA context on the GPU;
- ctxspawn: N processes holding a CUDA context that start a short program (`true`) 20 times a second, as a
  compiling helper starts ptxas;
- compile: N processes at nice 10 that compile new Triton variants one after another, with no CUDA context
  (Triton's compiler for this GPU's target: LLVM in the process, ptxas in a child);
- ctxcompile: the same, each holding a CUDA context on the GPU (a helper's ptxas is forked from such a process);
- starting: helpers given no case, one started every 2 s while the loop runs, the oldest stopped beyond N (a
  campaign's helpers start while its worker runs: their CUDA contexts and kernel loads).
A campaign's worker measured 3 to 4 times slower beside a dozen helpers that took about one case a second
(issue 29), while idle neighbours of any kind left the loop as fast. Busy CPUs alone did it, through torch's
one-host-thread-per-CPU (docs/speed.md; a GPU worker now runs one). Not a timed test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IDLE = {
    "sleep": "import torch, time; time.sleep(1e6)",
    "cuda": "import torch, time; torch.zeros(1, device='cuda'); torch.cuda.synchronize(); time.sleep(1e6)",
    "pulse": "import torch, time\nx = torch.ones(1 << 20, device='cuda')\n"
    "while True:\n    x.sum().item(); time.sleep(0.1)",
    "spin": "import os\nos.nice(10)\nwhile True: pass",
    "ctxspin": "import os, torch\ntorch.zeros(1, device='cuda')\nos.nice(10)\nwhile True: pass",
    "ctxspawn": "import os, subprocess, time, torch\ntorch.zeros(1, device='cuda')\nos.nice(10)\n"
    "while True:\n    subprocess.run(['true']); time.sleep(0.05)",
}


def compile_forever(arch: int, context: bool) -> None:
    """A `compile` / `ctxcompile` neighbour: new Triton variants for this GPU's target, one after another."""
    import os
    import random

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    os.nice(10)
    if context:
        import torch

        torch.zeros(1, device="cuda")

    @triton.jit
    def kernel(x_ptr, n, C: tl.constexpr):
        i = tl.arange(0, 1024)
        v = tl.load(x_ptr + i, mask=i < n)
        for _ in range(C % 5 + 1):
            v = tl.sqrt(v * C + 1.0)
        tl.store(x_ptr + i, v, mask=i < n)

    rng, target = random.Random(os.getpid()), GPUTarget("cuda", arch, 32)
    while True:  # a new constexpr each time: never in Triton's cache
        src = ASTSource(kernel, {"x_ptr": "*fp32", "n": "i32", "C": "constexpr"}, {"C": rng.randrange(1 << 40)})
        triton.compile(src, target=target)


class Churner(threading.Thread):
    """Starts a compile-ahead helper every `every` seconds until stopped, stopping the oldest beyond `count`."""

    def __init__(self, count: int, impl: str, every: float = 2.0):
        super().__init__(daemon=True)
        self.count, self.impl, self.every, self.helpers, self.done = count, impl, every, [], threading.Event()

    def run(self) -> None:
        from moe_lora_fuzz.fuzz.campaign.precompile import _Helper

        while not self.done.wait(self.every):
            self.helpers.append(_Helper("cuda", self.impl))
            if len(self.helpers) > self.count:
                self.helpers.pop(0).kill()

    def kill(self) -> None:
        self.done.set()
        self.join()
        for h in self.helpers:
            h.kill()


class Feeder(threading.Thread):
    """Gives idle helpers new cases of a nightly GPU campaign, `rate` a second in all, until stopped."""

    def __init__(self, helpers: list, rate: float):
        super().__init__(daemon=True)
        self.helpers, self.rate, self.sent, self.done = helpers, rate, 0, threading.Event()

    def run(self) -> None:
        from moe_lora_fuzz.fuzz.execution.worker import CampaignConfig, case_for

        cfg = CampaignConfig(impl="ours", device="cuda", profile="nightly", seed=1234)
        while not self.done.wait(1 / self.rate):
            for h in self.helpers:
                h.poll([])
                if h.ready and h.busy_since is None:
                    h.send(case_for(cfg, 10_000 + self.sent))
                    self.sent += 1
                    break

    def kill(self) -> None:
        self.done.set()
        self.join()


def start(kind: str, count: int, impl: str, rate: float) -> list:
    if kind == "none":
        return []
    if kind == "starting":
        churner = Churner(count, impl)
        churner.start()
        return [churner]
    if kind in ("helpers", "busy"):
        from moe_lora_fuzz.fuzz.campaign.precompile import _Helper

        helpers = [_Helper("cuda", impl) for _ in range(count)]
        end = time.monotonic() + 300
        while not all(h.ready for h in helpers) and time.monotonic() < end:
            for h in helpers:
                h.poll([])
            time.sleep(0.2)
        if kind == "busy":
            feeder = Feeder(helpers, rate)
            feeder.start()
            return [feeder, *helpers]  # the feeder stops before the helpers go
        return helpers
    if kind in ("compile", "ctxcompile"):
        import torch

        arch = "".join(map(str, torch.cuda.get_device_capability()))
        cmd = [sys.executable, __file__, "--compile-forever", arch, "1" if kind == "ctxcompile" else "0"]
    else:
        cmd = [sys.executable, "-c", IDLE[kind]]
    procs = [subprocess.Popen(cmd) for _ in range(count)]
    time.sleep(15)  # their imports and CUDA contexts are made before the loop starts
    return procs


def stop(neighbours: list) -> None:
    for n in neighbours:
        n.kill()
        if hasattr(n, "wait"):
            n.wait()


def main() -> None:
    if sys.argv[1:2] == ["--compile-forever"]:
        return compile_forever(int(sys.argv[2]), sys.argv[3] == "1")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", default="none,sleep,cuda,helpers")
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--impl", default="ours", help="the helpers' implementation (pass --impl to bench_cases too)")
    p.add_argument("--rate", type=float, default=1.0, help="busy: cases a second given to the helpers, in all")
    a, rest = p.parse_known_args()
    rest = [x for x in rest if x != "--"]
    for kind in a.kinds.split(","):
        neighbours = start(kind, a.count, a.impl, a.rate)
        try:
            out = subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "bench_cases.py"), *rest], capture_output=True, text=True
            )
        finally:
            stop(neighbours)
        steady = [s for s in out.stdout.splitlines() if s.startswith(("steady state", "|", "first pass"))]
        fed = f", {neighbours[0].sent} cases given" if kind == "busy" else ""
        print(
            f"### {a.count if kind != 'none' else 0} neighbours: {kind}{fed}\n"
            + "\n".join(steady or [out.stderr[-800:]])
        )
        print(flush=True)


if __name__ == "__main__":
    main()
