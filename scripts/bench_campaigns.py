"""Cases per second of real campaigns, per implementation, cold and warm, on one machine in one run.

    python scripts/bench_campaigns.py [--device auto|cpu|cuda] [--profile nightly|premerge] [--budget SECONDS]
                                      [--impls ours,sglang==0.5.23,vllm==0.33.0,vllm==0.34.0] [--seed N]
                                      [--cold-budget SECONDS] [--steady-after SECONDS] [--triage-share F]
                                      [--precompile N] [--out DIR] [--json FILE]

For each implementation, one after the other (never side by side: they would share the GPU and the host's cores):
- cold: `moe-lora-fuzz run` with TRITON_CACHE_DIR set to a new, empty folder (every kernel variant compiles, as on
  a fresh machine);
- warm: a second campaign in a new process with the same Triton cache and the next seed (the variants the first
  met load from the disk cache; the compile classes of a GPU campaign are shared by every seed, so a warm night
  meets mostly those).
Each campaign's report.json gives cases/s and its phase times (fuzz.runtime.phases); the script prints, in
markdown: one table of cases/s per implementation (the README's), then one of milliseconds per case per phase
group, then each campaign's full phase table. A warm campaign's steady state (from its first report.json written
after --steady-after seconds to its end) leaves out what a night's campaign pays once: the worker's and the
helpers' start, the worker's self-check, its first loads of the variants met early. Triage is off by default
(--triage-share 0): the rate is the fuzz loop's, whatever a foreign kernel's findings cost to minimise. A release
form (`vllm==0.34.0`) is loaded from $MOE_LORA_FUZZ_CACHE, set to ./.upstream-cache when that folder exists and
the variable is not set.
Not a timed test: the numbers depend on the machine (a loaded host says so in its rates).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMPLS = "ours,sglang==0.5.23,vllm==0.33.0,vllm==0.34.0"
# phase groups of the second table: a phase path belongs to the first group whose test it passes
GROUPS = (
    ("compile (jit)", lambda p: p.rpartition("/")[2] == "jit"),
    ("materialise", lambda p: p.endswith("materialise")),
    ("references", lambda p: p.endswith("references")),
    ("implementation", lambda p: p.endswith("/impl")),
    ("judge", lambda p: p.endswith("judge")),
    ("twins, diagnosis", lambda p: "/twins" in p or "/diagnose" in p),
    ("worker start, self-check", lambda p: p in ("startup", "selfcheck")),
    ("triage", lambda p: p.startswith("triage")),
    ("device probe (after a case)", lambda p: p == "probe"),
    ("round trip (ipc)", lambda p: p == "ipc"),
    ("unanswered cases (hang, crash, cut by the budget)", lambda p: p == "unanswered"),
    ("other", lambda p: True),
)


def group_of(path: str) -> str:
    return next(name for name, test in GROUPS if test(path))


def run_campaign(entry: str, a, seed: int, cache: str, out: Path, budget: float, steady_after: float | None) -> dict:
    """One campaign in its own process (`entry`: an --impl value, then any more `run` options); its report.json,
    or {"error": why}; with `steady_after`, also `steady`: the campaign after that many seconds (_since)."""
    env = dict(os.environ, TRITON_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    env.setdefault("PYTHONUNBUFFERED", "1")
    impl, *more = entry.split()
    cmd = [sys.executable, "-m", "moe_lora_fuzz", "run", "--impl", impl, "--device", a.device, "--profile", a.profile]
    cmd += more
    cmd += ["--budget", str(budget), "--seed", str(seed), "--out", str(out), "--triage-share", str(a.triage_share)]
    if a.precompile is not None:
        cmd += ["--precompile", str(a.precompile)]
    shutil.rmtree(out, ignore_errors=True)  # a campaign's --out must be empty (a rerun into the same folder)
    report, log_path, first = out / "report.json", out.parent / f"{out.name}.log", None
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            while proc.poll() is None and time.perf_counter() - t0 < budget * 3 + 300:
                time.sleep(0.25)
                if first is None and steady_after is not None:
                    first = _snapshot(report, steady_after)
            if proc.poll() is None:
                proc.kill()
        finally:
            proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1) or not report.is_file():
        lines = [s for s in log_path.read_text().splitlines() if s.strip()]
        return {"error": f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}", "wall_s": wall}
    r = json.loads(report.read_text())
    r["wall_s"] = round(wall, 1)
    if first is not None and r["elapsed_s"] > first["elapsed_s"]:
        r["steady"] = _since(first, r)
    return r


def _snapshot(report: Path, after: float) -> dict | None:
    """The campaign's report.json once it has run `after` seconds (it is rewritten about every second), or None."""
    try:
        r = json.loads(report.read_text())
    except (OSError, ValueError):  # not written yet (or, were it ever, caught mid-write)
        return None
    return r if r.get("elapsed_s", 0) >= after and r.get("cases") else None


def _since(first: dict, last: dict) -> dict:
    """The campaign between two of its reports: cases, seconds and phase totals (the steady state: no start-up,
    no first loads of the variants the worker meets early)."""
    p0 = first.get("phases", {})
    phases = {
        k: {"s": v["s"] - p0.get(k, {}).get("s", 0.0), "n": v["n"] - p0.get(k, {}).get("n", 0)}
        for k, v in last.get("phases", {}).items()
    }
    cases, elapsed = last["cases"] - first["cases"], last["elapsed_s"] - first["elapsed_s"]
    return {
        "after_s": first["elapsed_s"],
        "cases": cases,
        "elapsed_s": round(elapsed, 2),
        "cases_per_s": round(cases / elapsed, 3),
        "phases": {k: v for k, v in phases.items() if v["n"] > 0},
    }


def ms_per_case(r: dict) -> dict:
    """{phase path: ms per case} of one report."""
    n = max(1, r.get("cases", 0))
    return {k: 1000 * v["s"] / n for k, v in r.get("phases", {}).items()}


def variants(r: dict) -> int:
    """Kernel variants the worker compiled or loaded from Triton's disk cache (its `jit` phases)."""
    return sum(v["n"] for k, v in r.get("phases", {}).items() if k.rpartition("/")[2] == "jit")


def rate(r: dict) -> str:
    return "error" if "error" in r else f"{r['cases_per_s']:.1f}"


def steady(r: dict) -> str:
    """Cases per second in the steady state (`steady`: after --steady-after seconds, which leave out the worker's
    start and self-check, the helpers' start and the first loads; a night's campaign pays those once)."""
    if "error" in r:
        return "error"
    if "steady" not in r:
        return "-"
    return f"{r['steady']['cases_per_s']:.1f}"


def variant_cells(r: dict) -> list[str]:
    """Distinct variants reached, and the worker's compilations per case after the first minute (or over the
    campaign when it is shorter: then said), from report.json's `variants`."""
    v = r.get("variants") or {}
    later, first = v.get("after_first_minute") or {}, v.get("first_minute") or {}
    part = later if later.get("cases") else first
    when = "" if later.get("cases") else " (first minute)"
    return [str(v.get("distinct", "-")), f"{part.get('compiled_per_case', '-')}{when}"]


def helper_cell(r: dict) -> str:
    """The compile-ahead helpers' work (report.json `precompile`): cases run, variants they compiled."""
    pre = r.get("precompile") or {}
    return f"{pre['cases']} / {pre.get('compiled', '-')}" if "cases" in pre else "none"


def summary_table(results: dict) -> list[str]:
    rows = [
        "| implementation | cold cases/s | warm cases/s | warm, steady | cases cold / warm "
        "| variants compiled or loaded, cold / warm | distinct variants, warm | compiled per case, warm | "
        "helpers' cases / compiled, warm | findings cold / warm |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for impl, (cold, warm) in results.items():
        cells = [f"`{impl}`", rate(cold), rate(warm), steady(warm)]
        if "error" in cold and "error" in warm:
            cells += ["-", "-", "-", "-", "-", cold["error"]]
        else:
            cells += [
                f"{cold.get('cases', '-')} / {warm.get('cases', '-')}",
                f"{variants(cold)} / {variants(warm)}",
                *variant_cells(warm),
                helper_cell(warm),
                f"{cold.get('distinct_findings', '-')} / {warm.get('distinct_findings', '-')}",
            ]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    return rows


def cold_notes(results: dict) -> list[str]:
    """A warm campaign is warm only where its cold one went first: a cold one that judged under a tenth of the warm
    one's cases left the warm one to meet variants nothing had compiled (at f676ebf a 20 s cold campaign judged 2
    cases on an H100, and its 60 s warm one was still compiling)."""
    return [
        f"note: `{impl}` cold judged {cold['cases']} cases, warm {warm['cases']}: the warm campaign met variants the "
        "cold one never compiled, so its rates include compiling (raise --cold-budget)"
        for impl, (cold, warm) in results.items()
        if isinstance(cold.get("cases"), int)
        and isinstance(warm.get("cases"), int)
        and cold["cases"] * 10 < warm["cases"]
    ]


def group_table(results: dict) -> list[str]:
    """ms per case per phase group, one column per campaign (and one for each warm one's steady state)."""
    cols = [
        (impl, which, r)
        for impl, (cold, warm) in results.items()
        for which, r in (("cold", cold), ("warm", warm), ("warm, steady", warm.get("steady")))
        if r and "error" not in r
    ]
    if not cols:
        return ["(no campaign finished)"]
    grouped = []
    for _, _, r in cols:
        g = dict.fromkeys((name for name, _ in GROUPS), 0.0)
        for path, ms in ms_per_case(r).items():
            g[group_of(path)] += ms
        grouped.append(g)
    rows = ["| ms per case | " + " | ".join(f"`{i}` {w}" for i, w, _ in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, _ in GROUPS:
        rows.append(f"| {name} | " + " | ".join(f"{g[name]:.2f}" for g in grouped) + " |")
    rows.append(
        "| **all (wall / cases)** | "
        + " | ".join(f"**{1000 / max(r['cases_per_s'], 1e-9):.1f}**" for _, _, r in cols)
        + " |"
    )
    return rows


def phase_table(r: dict) -> list[str]:
    ms = ms_per_case(r)
    n = max(1, r.get("cases", 0))
    rows = ["| phase | ms per case | count per case | share |", "|---|---|---|---|"]
    for k, v in sorted(ms.items(), key=lambda kv: -kv[1]):
        if v < 0.005:
            continue
        count = r["phases"][k]["n"] / n
        rows.append(f"| {k} | {v:.2f} | {count:.2f} | {100 * v * n / 1000 / max(r['elapsed_s'], 1e-9):.1f}% |")
    return rows


def machine(device: str) -> str:
    import platform

    cores = os.cpu_count()
    if device == "cuda":
        import torch

        return f"{torch.cuda.get_device_name()}, {cores} host cores"
    return f"CPU only ({platform.processor() or platform.machine()}, {cores} cores, Triton's interpreter)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--profile", default="nightly", choices=("nightly", "premerge"))
    p.add_argument("--budget", type=float, default=30.0, help="seconds per campaign (two per implementation)")
    p.add_argument(
        "--impls",
        default=DEFAULT_IMPLS,
        help=f"comma-separated --impl values, each optionally followed by more `run` options, e.g. "
        f"'vllm==0.34.0 --variant-draw off' (default: {DEFAULT_IMPLS})",
    )
    p.add_argument("--cold-budget", type=float, default=None, help="seconds per cold campaign (default: --budget)")
    p.add_argument(
        "--steady-after",
        type=float,
        default=None,
        help="a warm campaign's steady state starts at its first report written after this many seconds (default 15, "
        "or half the budget when that is shorter)",
    )
    p.add_argument("--seed", type=int, default=29, help="the cold campaigns' seed; warm ones use seed + 1")
    p.add_argument("--triage-share", type=float, default=0.0, help="passed to each campaign (default 0: no triage)")
    p.add_argument("--precompile", type=int, default=None, help="passed to each campaign (default: the campaign's)")
    p.add_argument("--out", default=None, help="folder for the campaigns' outputs (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write every report's numbers here")
    p.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds for the whole run: campaigns that cannot end by then are skipped",
    )
    a = p.parse_args()
    a.cold_budget = a.budget if a.cold_budget is None else a.cold_budget
    if a.budget <= 0 or a.cold_budget <= 0:
        p.error("--budget and --cold-budget must be positive")
    a.steady_after = min(15.0, a.budget / 2) if a.steady_after is None else a.steady_after
    if not 0 <= a.steady_after < a.budget:
        p.error("--steady-after must be at least 0 and less than --budget")
    impls = [s.strip() for s in a.impls.split(",") if s.strip()]
    if not impls:
        p.error("--impls must name at least one implementation")
    sys.path.insert(0, str(ROOT))
    from moe_lora_fuzz.contract import resolve_device

    a.device = resolve_device(a.device)
    cache = ROOT / ".upstream-cache"
    if "MOE_LORA_FUZZ_CACHE" not in os.environ and cache.is_dir():
        os.environ["MOE_LORA_FUZZ_CACHE"] = str(cache)
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="bench-campaigns-"))
    out.mkdir(parents=True, exist_ok=True)
    results, start = {}, time.monotonic()
    for i, impl in enumerate(impls):
        triton_cache = out / f"triton-cold-{i}"  # empty: a fresh machine's compile
        shutil.rmtree(triton_cache, ignore_errors=True)
        triton_cache.mkdir()
        pair = []
        for which, seed, budget, after in (
            ("cold", a.seed, a.cold_budget, None),
            ("warm", a.seed + 1, a.budget, a.steady_after),
        ):
            late = a.deadline is not None and time.monotonic() - start + budget + 20 > a.deadline
            r = {"error": "skipped (--deadline)", "wall_s": 0.0} if late else None
            r = r or run_campaign(impl, a, seed, str(triton_cache), out / f"{i}-{which}", budget, after)
            pair.append(r)
            print(
                f"{impl} {which}: {rate(r)} cases/s ({r.get('cases', 0)} cases, {r['wall_s']:.0f} s wall)"
                + (f" {r['error']}" if "error" in r else ""),
                flush=True,
            )
        results[impl] = pair
    print(
        f"\n## Campaigns per implementation, cold and warm: {machine(a.device)}, profile {a.profile}, "
        f"{a.cold_budget:g} s cold, {a.budget:g} s warm (steady: after {a.steady_after:g} s), triage share "
        f"{a.triage_share:g}, seeds {a.seed} (cold) and {a.seed + 1} (warm)\n"
    )
    print("\n".join(summary_table(results) + [""] + cold_notes(results)))
    print("\n### Milliseconds per case by phase group (report.json `phases`; compiling ahead runs beside the worker)\n")
    print("\n".join(group_table(results)))
    for impl, pair in results.items():
        cold, warm = pair
        for which, r in (("cold", cold), ("warm", warm), (f"warm after {a.steady_after:g} s", warm.get("steady"))):
            if r and "error" not in r:
                print(
                    f"\n### `{impl}` {which}: {r['cases']} cases in {r['elapsed_s']} s = {r['cases_per_s']} cases/s\n"
                )
                print("\n".join(phase_table(r)))
    if a.json:
        keep = ("cases", "elapsed_s", "cases_per_s", "distinct_findings", "phases", "error", "wall_s", "precompile")
        keep += ("variants", "steady")
        data = {
            impl: {w: {k: r[k] for k in keep if k in r} for w, r in zip(("cold", "warm"), pair, strict=True)}
            for impl, pair in results.items()
        }
        Path(a.json).write_text(
            json.dumps({"device": a.device, "machine": machine(a.device), "results": data}, indent=1)
        )
    print(f"\noutputs: {out}")


if __name__ == "__main__":
    main()
