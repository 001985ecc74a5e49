"""The campaign's output directory: one owner, reports checked before they are believed, nothing on disk forgotten.

- `Lock`: one writer per report. A campaign holds an exclusive flock(2) on `<report>.lock` for its whole run,
  with its pid, host and start time written in it; a second campaign on the same report exits 2 naming the
  owner. The kernel drops the lock when its holder dies (kill -9 included), so a lock left by a dead campaign
  is stale by construction: the next campaign takes it over and says whose it was. Shards that share a
  directory each lock their own report.
- `check_report`: a report read back (--resume, merge, triage) is validated field by field, type by type, so a
  damaged or hostile file is one error line naming the field, never a traceback or a half-done merge.
- `findings_on_disk`: the repro files a report does not list (a campaign killed between writing a repro and
  its report, a report deleted or replaced) become findings again: --resume and merge count every repro on disk.
- `OutputError`: the disk filled up or refused a write; the message says what was saved and what was not.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path

MAX_REPORT_BYTES = 256 << 20  # a report lists findings and coverage counts; far above any real one


class OutputError(Exception):
    """Writing the campaign's outputs failed (disk full, permissions, I/O error): exit 2."""


class ResumeError(ValueError):
    """--resume cannot continue the report it found (usage error, exit 2)."""


class LockError(ValueError):
    """Another live campaign owns this output (exit 2)."""


class MergeError(ValueError):
    """An input that cannot be merged; the message names the directory and the rule (exit 2)."""


def report_paths(directory: Path) -> list[Path]:
    """The campaign reports in a directory: report.json, or one report-shardIofN.json per shard that wrote
    there (shards may share a directory)."""
    if not Path(directory).is_dir():
        raise MergeError(f"{directory}: not a directory (a campaign's --out holds its report.json)")
    paths = sorted(Path(directory).glob("report-shard*.json")) or [Path(directory) / "report.json"]
    if not paths[0].is_file():
        raise MergeError(f"{directory}: no report.json (not a campaign's --out directory)")
    return paths


class ReportError(ValueError):
    """A report that is not a campaign report: the message names the file and the field."""


# ---- the lock ---------------------------------------------------------------------------------------------
def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), telling a reused pid from the owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


class Lock:
    """Held with `with Lock(report_path, campaign):`; `taken_over` describes a stale lock it replaced."""

    def __init__(self, report: Path, campaign: str):
        self.path = report.with_name(report.name + ".lock")
        self.campaign = campaign
        self.fd: int | None = None
        self.taken_over: str | None = None

    def __enter__(self) -> "Lock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # the file may be unlinked by its releasing owner between open and flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                owner = _read_owner(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise LockError(
                    f"--out {self.path.parent}: another campaign is writing {self.path.name[:-5]} "
                    f"({_describe(owner)}); wait for it, or give this one another --out"
                ) from None
            if os.fstat(fd).st_ino != _inode(self.path):
                os.close(fd)
                continue
            old = _read_owner(fd)
            if old:
                self.taken_over = f"stale lock of {_describe(old)} taken over (that campaign is not running)"
            me = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "start": _start_time(os.getpid()),
                "campaign": self.campaign,
                "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            self.fd = fd
            return self
        raise LockError(f"--out {self.path.parent}: could not take {self.path} (it keeps being replaced)")

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)  # before unlocking: a waiter then sees a new inode and retries
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
        return False


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _read_owner(fd: int) -> dict | None:
    try:
        d = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "null")
        return d if isinstance(d, dict) else None
    except (OSError, ValueError):
        return None


def _describe(owner: dict | None) -> str:
    if not owner:
        return "owner unknown"
    return (
        (
            f"pid {owner.get('pid')!s:.12} on host {owner.get('host')!s:.64}, campaign {owner.get('campaign')!s:.40}, "
            f"since {owner.get('since')!s:.20}"
        )
        .encode("unicode_escape")
        .decode("ascii")
    )


# ---- reading reports back ------------------------------------------------------------------------------------
def _types(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _need(d: dict, key: str, types, path, prefix: str = "", optional: bool = False):
    """d[key] checked against `types` (a bool is never an int here); errors read `PATH: field 'a.b': ...`."""
    name = f"{path}: field {prefix + key!r}"
    if key not in d:
        if optional:
            return None
        raise ReportError(f"{name} missing")
    v = d[key]
    if v is None and optional:
        return None
    types = _types(types)
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        names = "/".join("number" if t is float else t.__name__ for t in types if not (t is int and float in types))
        raise ReportError(f"{name}: expected {names}, got {type(v).__name__}")
    return v


def _counts(d, path, name: str) -> None:
    """A {str: int >= 0} mapping (kinds, coverage counts)."""
    if not all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in d.items()):
        raise ReportError(f"{path}: field {name!r}: expected names mapped to integers >= 0")


def _check_triage(info, path, prefix: str) -> None:
    if info is None:
        return
    if not isinstance(info, dict):
        raise ReportError(f"{path}: field {prefix + 'triage'!r}: expected an object or null, got {type(info).__name__}")
    w = f"{prefix}triage."
    for key in ("key", "via", "kind", "family", "failure", "trigger", "minimal_repro"):
        _need(info, key, str, path, w)
    _need(info, "essential", dict, path, w)
    _need(info, "disappears_with", list, path, w)
    _need(info, "minimal_case", (str, dict), path, w)
    if not all(isinstance(a, str) for a in _need(info, "also", list, path, w, optional=True) or []):
        raise ReportError(f"{path}: field {w + 'also'!r}: expected a list of strings")


def _check_parts(report: dict, path) -> None:
    """Coverage, phases, shard and the other summaries merge adds up."""
    cov = _need(report, "coverage", dict, path, optional=True) or {}
    for key in ("edges", "combinations"):
        _counts(_need(cov, key, dict, path, "coverage.", optional=True) or {}, path, f"coverage.{key}")
    for knob, counts in (_need(cov, "knobs", dict, path, "coverage.", optional=True) or {}).items():
        if not isinstance(counts, dict):
            raise ReportError(f"{path}: field 'coverage.knobs.{knob:.40}': expected an object")
        _counts(counts, path, f"coverage.knobs.{knob:.40}")
    _need(cov, "noop_share", (int, float), path, "coverage.", optional=True)
    for name, t in (_need(report, "phases", dict, path, optional=True) or {}).items():
        if not (isinstance(t, dict) and isinstance(t.get("s"), (int, float)) and type(t.get("n")) is int):
            raise ReportError(f'{path}: field \'phases.{name:.40}\': expected {{"s": seconds, "n": count}}')
    shard = _need(report, "shard", list, path, optional=True)
    if shard is not None and not (len(shard) == 2 and all(type(x) is int for x in shard)):
        raise ReportError(f"{path}: field 'shard': expected [index, count]")
    for key in ("environment", "precompile"):
        _need(report, key, dict, path, optional=True)
    _need(report, "worker_restarts", int, path, optional=True)


def check_report(d, path: Path) -> dict:
    """Raise ReportError naming the field when `d` is not a campaign report as written by this harness (or a
    merged one); return it otherwise. Checks what --resume, merge and triage read."""
    if not isinstance(d, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(d).__name__}")
    if (_need(d, "cases", int, path, optional=True) or 0) < 0:  # triage reads findings alone: counts optional
        raise ReportError(f"{path}: field 'cases': must be >= 0")
    _counts(_need(d, "kinds", dict, path, optional=True) or {}, path, "kinds")
    _need(d, "coverage", dict, path, optional=True)
    _need(d, "elapsed_s", (int, float), path, optional=True)
    index = _need(d, "next_index", int, path, optional=True)
    if index is not None and index < 0:
        raise ReportError(f"{path}: field 'next_index': must be >= 0")
    if not all(isinstance(r, str) or r is None for r in _need(d, "resumed", list, path, optional=True) or []):
        raise ReportError(f"{path}: field 'resumed': expected a list of campaign ids")
    for key in ("campaign", "impl"):
        _need(d, key, str, path, optional=True)
    if not all(isinstance(n, str) for n in _need(d, "notes", list, path, optional=True) or []):
        raise ReportError(f"{path}: field 'notes': expected a list of strings")
    _check_parts(d, path)
    for i, f in enumerate(_need(d, "findings", list, path)):
        w = f"findings[{i}]."
        if not isinstance(f, dict):
            raise ReportError(f"{path}: field 'findings[{i}]': expected an object, got {type(f).__name__}")
        for key in ("signature", "kind", "repro"):
            _need(f, key, str, path, w)
        count = _need(f, "count", int, path, w, optional=True)
        if count is not None and count < 1:
            raise ReportError(f"{path}: field '{w}count': must be >= 1")
        for key, typ in (("message", str), ("case_index", int), ("triage_note", str)):
            _need(f, key, typ, path, w, optional=True)
        _check_triage(f.get("triage"), path, w)
    return d


def require(report: dict, path, *keys: str) -> dict:
    """The fields a caller needs beyond check_report's optional ones (--resume and merge: cases, kinds)."""
    for key in keys:
        if report.get(key) is None:
            raise ReportError(f"{path}: field {key!r} missing")
    return report


def read_report(path: Path) -> dict:
    """Load and check a report file (regular file, bounded size, strict JSON of any nesting depth)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ReportError(f"{path}: not a regular file")
        if st.st_size > MAX_REPORT_BYTES:
            raise ReportError(f"{path}: larger than {MAX_REPORT_BYTES} bytes; not a campaign report")
        text = Path(path).read_bytes().decode("utf-8")
        d = json.loads(text)
    except OSError as e:
        raise ReportError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text file") from None
    except RecursionError:
        raise ReportError(f"{path}: nested too deeply; not a campaign report") from None
    except ValueError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None
    return check_report(d, path)


# ---- repro files the report does not list ----------------------------------------------------------------
def _lineage(report: dict) -> set:
    return {c for c in [report.get("campaign"), *report.get("resumed", [])] if isinstance(c, str)}


def findings_on_disk(directory: Path, listed: list[dict], impl: str | None, others: set) -> list[dict]:
    """Findings for the repro files in `directory` (repro-*.json, regular files only) that `listed` does not
    name, written for `impl` (None: any) by a campaign not in `others` (the lineages of other reports sharing
    the directory). A file that cannot be read as a repro raises ReportError: it would otherwise be lost."""
    from moe_lora_fuzz.fuzz.records.repro import ReproError, load

    named = {Path(f.get("repro", "")).name for f in listed}
    sigs = {f.get("signature") for f in listed}
    found = []
    for path in sorted(Path(directory).glob("repro-*.json")):
        if path.name in named or not stat.S_ISREG(os.lstat(path).st_mode):
            continue
        try:
            r = load(path)
        except ReproError as e:
            raise ReportError(f"{e}; the report does not list it either (move it away to go on)") from None
        v = r.verdict
        if (impl is not None and r.impl != impl) or r.campaign in others or v.signature in sigs:
            continue
        sigs.add(v.signature)
        found.append(
            {
                "signature": v.signature,
                "kind": v.kind,
                "count": 1,
                "case_index": None,
                "message": v.message,
                "repro": str(path.resolve()),
                "triage": None,
                "triage_note": "not triaged: recovered from its repro file (the report did not list it)",
            }
        )
    return found


def other_lineages(directory: Path, mine: Path) -> set:
    """Campaign ids recorded by the other reports in `directory` (shards sharing it)."""
    ids = set()
    for p in Path(directory).glob("report*.json"):
        if p.name == mine.name:
            continue
        try:
            ids |= _lineage(read_report(p))
        except ReportError:
            continue
    return ids


def previous_report(cfg) -> dict | None:
    """--resume: the report to continue (checked), with the repro files it does not list added back; a
    synthetic one (no cases) when only repro files are left; None when not resuming or nothing is there."""
    if not cfg.resume:
        return None
    path, others = cfg.report_path, other_lineages(cfg.out, cfg.report_path)
    try:
        if path.exists() or path.is_symlink():
            old = require(read_report(path), path, "cases", "kinds")
            if old.get("impl") != cfg.impl or old.get("seed") != cfg.seed or old.get("shard") != list(cfg.shard):
                raise ResumeError(
                    f"--resume: cannot continue {path}: it was a campaign of impl {str(old.get('impl'))[:200]!r}, "
                    f"seed {str(old.get('seed'))[:40]}, shard {str(old.get('shard'))[:40]}; resume with the same "
                    "--impl, --seed and --shard"
                )
        else:
            old = {"cases": 0, "kinds": {}, "findings": [], "next_index": None, "resumed": []}
        old["findings"] = old["findings"] + findings_on_disk(cfg.out, old["findings"], cfg.impl, others)
    except ReportError as e:
        raise ResumeError(f"--resume: cannot continue: {e}") from None
    if not old.get("campaign") and not old["findings"] and not old["cases"]:
        return None
    return old


def saved_so_far(out: Path, cases: int | None, listed: int) -> str:
    """What is on disk, for an OutputError's message: repro files, and the last report.json written."""
    try:
        repros = len(list(Path(out).glob("repro-*.json")))
    except OSError:
        repros = "?"
    if cases is None:
        return f"saved: {repros} repro file(s), no report.json (--resume and merge count the repro files)"
    extra = "" if repros == listed else "; --resume and merge count the repro files it does not list"
    return f"saved: {repros} repro file(s), report.json at case {cases} listing {listed} finding(s){extra}"
