"""Findings carry forward: the repro files of earlier campaigns are replayed first, as Hypothesis replays its
example database before generating anything new.

`moe-lora-fuzz run --corpus DIR` (repeatable) judges every repro file found in DIR before the random stream,
with the campaign's implementation, and says which still fail; a case that still fails is recorded and
triaged like any other finding (its repro file in the new --out). `moe-lora-fuzz replay DIR` or
`replay A B C` replays many files and prints one line each. Corpus replays are counted in report.json's
`corpus`, not in its `cases`, `kinds` or coverage (those describe the drawn stream, and --max-cases counts
it). In a directory, a campaign's minimal repro
(`minimal-*.json`, written by triage) stands for its raw one (`repro-*.json`): smaller, and the same
failure; files under `sanitize/` are the sanitizer's scratch copies and are skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAX_FILES = 500  # a corpus larger than this is refused: replay a subset, or merge campaigns first


class CorpusError(ValueError):
    """A corpus path that cannot be used (usage error, exit 2)."""


def repro_files(paths) -> list[Path]:
    """The repro files named by `paths` (files as given; directories searched recursively), minimal files
    standing for the raw ones they were reduced from."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
            continue
        if not p.is_dir():
            raise CorpusError(f"{p}: no such file or directory")
        found = sorted(f for f in p.rglob("*.json") if "sanitize" not in f.relative_to(p).parts[:-1])
        minimal = {f.name.replace("minimal-", "repro-", 1) for f in found if f.name.startswith("minimal-")}
        out += [
            f for f in found if f.name.startswith("minimal-") or (f.name.startswith("repro-") and f.name not in minimal)
        ]
    if len(out) > MAX_FILES:
        raise CorpusError(f"{len(out)} repro files: more than {MAX_FILES}; name fewer directories")
    return out


def load_all(files: list[Path], interpreter: bool) -> list:
    """Every file loaded and checked before anything runs (a CorpusError names the first bad one)."""
    from moe_lora_fuzz.fuzz.records.repro import ReproError, check_size, load

    repros = []
    for f in files:
        try:
            r = load(f)
            check_size(r.case)
            r.case.validate(interpreter)
        except (ReproError, ValueError) as e:
            raise CorpusError(f"{f}: {e}") from None
        repros.append(r)
    return repros


def replay_corpus(cfg, report, worker, triage) -> None:
    """--corpus: judge every earlier repro with this campaign's worker before the random stream."""
    from moe_lora_fuzz.fuzz.campaign.casework import _judge_timed, _record

    try:
        files = repro_files(cfg.corpus)
        repros = load_all(files, cfg.device == "cpu")
    except CorpusError as e:
        report.extra["corpus"] = {"error": str(e)}
        print(f"WARNING: --corpus: {e}; replaying nothing", file=sys.stderr, flush=True)
        return
    rows = []
    for path, repro in zip(files, repros, strict=True):
        case = worker.profile.fit(repro.case)
        v = _judge_timed(worker, report, case, timeout=cfg.timeout, metamorphic=True)  # not counted in `cases`
        rows.append(
            {
                "repro": str(path),
                "recorded": repro.verdict.kind,
                "now": v.kind,
                "still_fails": v.failed,
                "message": v.message[:300],
            }
        )
        if v.failed and _record(cfg, report, case, -1, v):
            triage.after_finding(report, case, v.to_dict(), worker)
        if not cfg.quiet:
            state = f"still fails ({v.kind})" if v.failed else "passes now"
            print(f"CORPUS {state}: {path}", file=sys.stderr, flush=True)
    report.extra["corpus"] = {
        "replayed": len(rows),
        "still_failing": sum(r["still_fails"] for r in rows),
        "files": rows,
    }


def replay_many(paths, impl: str | None, device: str, timeout: float | None) -> tuple[list[dict], int]:
    """`replay DIR` / `replay A B C`: (one row per file, exit code: 1 when any still fails). Files that name
    an external implementation need `impl` (a file never chooses code to run)."""
    from moe_lora_fuzz.fuzz.execution.worker import CASE_TIMEOUT_S, Worker
    from moe_lora_fuzz.fuzz.records.repro import is_builtin
    from moe_lora_fuzz.fuzz.targets.impls import ImplError

    files = repro_files(paths)
    if not files:
        raise CorpusError(
            f"{', '.join(map(str, paths))}: no repro files found (a directory is searched for the repro-*.json and "
            "minimal-*.json files campaigns write; name other files one by one)"
        )
    repros = load_all(files, device == "cpu")
    for f, r in zip(files, repros, strict=True):
        if impl is None and not is_builtin(r.impl):
            raise CorpusError(
                f"{f}: names the external implementation {r.impl!r}, and a file never chooses code to run; "
                "pass --impl if you trust it"
            )
    workers: dict = {}
    rows = []
    try:
        for f, r in zip(files, repros, strict=True):
            name = impl or r.impl
            if name not in workers:
                try:
                    workers[name] = Worker(device, name)
                except ImplError as e:
                    raise CorpusError(str(e)) from None
            w = workers[name]
            t = timeout or r.case_timeout_s or CASE_TIMEOUT_S[device]
            v = w.judge(w.profile.fit(r.case), timeout=t, metamorphic=True)
            rows.append({"repro": str(f), "impl": name, "recorded": r.verdict.kind, "now": v.kind, "failed": v.failed})
    finally:
        for w in workers.values():
            w.close()
    return rows, 1 if any(r["failed"] for r in rows) else 0
