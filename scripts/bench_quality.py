"""Which seeded bugs each checker catches: our campaign vs an upstream-style test, side by side.

    python scripts/bench_quality.py [--device cpu|cuda] [--seeds 5] [--budget 60] [--profile premerge|nightly]

Ours: a campaign per (mutant, seed) stopped at its first finding; reports caught (in how many seeds),
and the median cases and seconds to the first finding. Upstream-style: fuzz.targets.upstream_style (M = 100,
block 16, SPLIT_K = 1, torch.rand inputs, fixed 1e-2 tolerance) on the gate_up and down cases, one data
seed per run; caught if any seed fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--budget", type=float, default=60.0, help="seconds per (mutant, seed) campaign")
    p.add_argument("--mutants", default=None, help="comma-separated subset")
    p.add_argument("--profile", default="premerge", choices=("premerge", "nightly"), help="nightly: GPU sizes")
    p.add_argument("--skip-upstream", action="store_true", help="only our campaigns (the upstream column shows -)")
    a = p.parse_args()
    import torch
    from moe_lora_fuzz.contract import resolve_device

    device = resolve_device(a.device)
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    from moe_lora_fuzz.fuzz.campaign.runner import CASE_TIMEOUT_S, CampaignConfig, Worker, run_campaign
    from moe_lora_fuzz.fuzz.targets.upstream_style import UPSTREAM_CASES
    from moe_lora_fuzz.kernels import MUTANTS

    ids = a.mutants.split(",") if a.mutants else list(MUTANTS)
    where = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    print(f"## seeded bugs on {where}, profile {a.profile}: {a.seeds} seeds, {a.budget:.0f} s cap per campaign\n")
    print(
        "| mutant | ours: caught | cases to first (median) | s to first (median) | first kind "
        "| upstream-style: caught |"
    )
    print("|---|---|---|---|---|---|")
    for mid in ([] if a.mutants else ["ours (no bug)"]) + ids:
        impl = "ours" if mid.startswith("ours") else f"mutant:{mid}"
        hits, cases, secs, kinds = 0, [], [], set()
        for seed in range(a.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.time()
                rep = run_campaign(
                    CampaignConfig(
                        impl=impl,
                        device=device,
                        profile=a.profile,
                        budget=a.budget,
                        seed=seed,
                        out=Path(tmp),
                        stop_after=1,
                        quiet=True,
                    )
                )
                if rep.findings:
                    first = next(iter(rep.findings.values()))
                    hits += 1
                    cases.append(first["case_index"] + 1)
                    secs.append(time.time() - t0)
                    kinds.add(first["kind"])
        up_caught = 0
        worker = Worker(device, impl)  # a crash or hang is a failing verdict; the worker restarts itself
        for seed in range(0 if a.skip_upstream else a.seeds):
            for c in UPSTREAM_CASES:
                if worker.judge(c.replace(seed=seed), timeout=CASE_TIMEOUT_S[device], mode="upstream").failed:
                    up_caught += 1
                    break
        worker.close()
        med_c = f"{statistics.median(cases):.0f}" if cases else "-"
        med_s = f"{statistics.median(secs):.1f}" if secs else "-"
        print(
            f"| {mid} | {hits}/{a.seeds} | {med_c} | {med_s} | {', '.join(sorted(kinds)) or '-'} "
            f"| {'-' if a.skip_upstream else f'{up_caught}/{a.seeds}'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
