"""Nightly campaign: campaigns on disjoint deterministic shards, K per GPU, one merged report.

    python scripts/nightly.py --budget 3600 --out nightly-out [--gpus N] [--shards-per-gpu K] [--impl ours] [--seed S]

Shard j of N*K runs `moe-lora-fuzz run --profile nightly --shard j/(N*K)` on GPU j mod N (CUDA_VISIBLE_DEVICES);
the shards are merged by `fuzz.campaign.merge` (the same code as `moe-lora-fuzz merge`) into OUT: report.json and
every repro file. Exit 1 on findings. A progress line every minute; on Ctrl-C the shards (one process group)
write their reports, which are merged (exit 130). A campaign's worker leaves its GPU mostly idle and needs about
one host core (docs/speed.md), so by default each GPU runs one campaign per 4 host cores it has, at most 4 (the
host's compile-ahead helpers are shared among all shards). One H100 with 16 host cores, our kernels, 45 s each
(scripts/gpu_steps/issue29w.sh): K = 1, 2, 3, 4 judged 39, 78, 121, 139 cases/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROGRESS_EVERY_S = 60.0  # a line while the shards run
POLL_S = 1.0
MAX_SHARDS_PER_GPU = 4  # the most measured; 4 on a 16-core host still gained (121 -> 139 cases/s from 3)


def default_shards_per_gpu(gpus: int) -> int:
    """One campaign per 4 host cores of each GPU's share (its worker, a few compile-ahead helpers), 1 to 4."""
    return max(1, min(MAX_SHARDS_PER_GPU, (os.cpu_count() or 1) // (4 * gpus)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=3600)
    p.add_argument("--out", type=Path, default=Path("nightly-out"))
    p.add_argument("--gpus", type=int, default=None, help="default: every visible GPU")
    p.add_argument(
        "--shards-per-gpu",
        type=int,
        default=None,
        help="campaigns sharing each GPU (default: host cores / 4 per GPU, 1-4)",
    )
    p.add_argument("--impl", default="ours")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.out = a.out.resolve()  # the shards run with cwd = the repository root
    import torch
    from moe_lora_fuzz.fuzz.campaign.precompile import default_processes

    gpus = a.gpus or torch.cuda.device_count()
    if gpus < 1:
        print("error: no CUDA GPU visible; the nightly campaign runs on GPUs", file=sys.stderr)
        return 2
    if a.shards_per_gpu is None:
        a.shards_per_gpu = default_shards_per_gpu(gpus)
    if a.shards_per_gpu < 1:
        print(f"error: --shards-per-gpu must be at least 1, got {a.shards_per_gpu}", file=sys.stderr)
        return 2
    n = gpus * a.shards_per_gpu
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYPOTHESIS_PROFILE="nightly")
    env.pop("TRITON_INTERPRET", None)
    a.out.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        cmd = [
            sys.executable,
            "-m",
            "moe_lora_fuzz.fuzz.cli",
            "run",
            "--device",
            "cuda",
            "--profile",
            "nightly",
            "--impl",
            a.impl,
            "--budget",
            str(a.budget),
            "--seed",
            str(a.seed),
            "--shard",
            f"{i}/{n}",
            "--out",
            str(a.out / f"shard{i}"),
            "--precompile",  # the host's cores are shared by its shards' helpers
            str(default_processes("cuda", shards_here=n)),
        ]
        log = open(a.out / f"shard{i}.log", "w")
        procs.append(
            subprocess.Popen(
                cmd, cwd=ROOT, env=dict(env, CUDA_VISIBLE_DEVICES=str(i % gpus)), stdout=log, stderr=subprocess.STDOUT
            )
        )
    interrupted = False
    try:
        codes = _wait(procs, a.out, n)
    except KeyboardInterrupt:  # the shards got the Ctrl-C too (one process group): each writes its report and stops
        print("interrupted: waiting for the shards to write their reports, then merging them", file=sys.stderr)
        codes, interrupted = [pr.wait() for pr in procs], True
    if any(c == 2 for c in codes):
        print(f"error: a shard failed to start (exit codes {codes}); see {a.out}/shard*.log", file=sys.stderr)
        return 2
    from moe_lora_fuzz.fuzz.campaign.merge import MergeError, merge_reports, summary

    try:
        merged = merge_reports([a.out / f"shard{i}" for i in range(n)], a.out)
    except MergeError as e:
        print(f"error: {e}; see {a.out}/shard*.log", file=sys.stderr)
        return 2
    print(f"{gpus} GPUs, {n} shards: {summary(merged, a.out)}; kinds {merged['kinds']}")
    return 130 if interrupted else 1 if merged["findings"] else 0


def _wait(procs: list, out: Path, n: int) -> list[int]:
    """The shards' exit codes, with a progress line every PROGRESS_EVERY_S from their report.json files (each
    rewritten about every second while its campaign runs)."""
    start = last = time.monotonic()
    while any(pr.poll() is None for pr in procs):
        time.sleep(POLL_S)
        if time.monotonic() - last >= PROGRESS_EVERY_S:
            last = time.monotonic()
            print(_progress(out, n, last - start), flush=True)
    return [pr.wait() for pr in procs]


def _progress(out: Path, n: int, elapsed: float) -> str:
    cases = findings = started = 0
    for i in range(n):
        try:
            r = json.loads((out / f"shard{i}" / "report.json").read_text())
        except (OSError, ValueError):  # not written yet, or caught mid-write
            continue
        started += 1
        cases += int(r.get("cases", 0))
        findings += len(r.get("findings", []))
    return f"[{elapsed:6.0f} s] {started} of {n} shards reporting: {cases} cases, {findings} findings (per shard)"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
