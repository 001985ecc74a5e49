"""Does what runs beside the fuzz loop slow it down? The in-process loop (scripts/bench_cases.py) with N idle
neighbours of each kind, one kind after the other:

    python scripts/bench_neighbours.py [--kinds none,sleep,cuda,helpers] [--count 12] [--impl ours] -- BENCH_CASES_ARGS

- none: nothing beside it (the baseline);
- sleep: N processes that imported torch and sleep;
- cuda: N processes that made a CUDA context on the same GPU and sleep;
- helpers: N compile-ahead helpers (fuzz.campaign.precompile), started, ready, given no case.
A campaign's worker measured 3 to 4 times slower beside a dozen helpers that compiled about one case a second
(issue 29): if an idle kind slows the loop, the cost is their presence, not their work. Not a timed test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IDLE = {
    "sleep": "import torch, time; time.sleep(1e6)",
    "cuda": "import torch, time; torch.zeros(1, device='cuda'); torch.cuda.synchronize(); time.sleep(1e6)",
}


def start(kind: str, count: int, impl: str) -> list:
    if kind == "none":
        return []
    if kind == "helpers":
        from moe_lora_fuzz.fuzz.campaign.precompile import _Helper

        helpers = [_Helper("cuda", impl) for _ in range(count)]
        end = time.monotonic() + 300
        while not all(h.ready for h in helpers) and time.monotonic() < end:
            for h in helpers:
                h.poll([])
            time.sleep(0.2)
        return helpers
    procs = [subprocess.Popen([sys.executable, "-c", IDLE[kind]]) for _ in range(count)]
    time.sleep(15)  # their imports and CUDA contexts are made before the loop starts
    return procs


def stop(neighbours: list) -> None:
    for n in neighbours:
        n.kill()
        if hasattr(n, "wait"):
            n.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kinds", default="none,sleep,cuda,helpers")
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--impl", default="ours", help="the helpers' implementation (pass --impl to bench_cases too)")
    a, rest = p.parse_known_args()
    rest = [x for x in rest if x != "--"]
    for kind in a.kinds.split(","):
        neighbours = start(kind, a.count, a.impl)
        try:
            out = subprocess.run(
                [sys.executable, str(ROOT / "scripts" / "bench_cases.py"), *rest], capture_output=True, text=True
            )
        finally:
            stop(neighbours)
        steady = [s for s in out.stdout.splitlines() if s.startswith(("steady state", "|", "first pass"))]
        print(f"### {a.count if kind != 'none' else 0} neighbours: {kind}\n" + "\n".join(steady or [out.stderr[-800:]]))
        print(flush=True)


if __name__ == "__main__":
    main()
