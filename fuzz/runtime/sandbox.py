"""Containing an implementation's side effects inside the campaign's worker process.

An implementation runs in the worker, in the same process as the references and the oracle. Two things it
can do outlive its case:
- change torch or the harness (a monkeypatch of `torch.matmul`, of `torch.Tensor.__add__`, of a function in
  reference/ or fuzz/, torch's default dtype or TF32 switches): every later case would be judged by the changed
  code (19 false `reference-disagreement` findings once). `fingerprint()` is taken before and after every case
  (after, once the case's answer went out: the campaign records it meanwhile); when it changed the worker says so
  and ends without taking another request, and the campaign judges the next case in a fresh worker
  (fuzz.execution.worker.Worker._ask).
- start processes that detach (a new session, a double fork): 212 were left behind by one campaign. The
  worker leads its own process group and makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER,
  Linux), so every orphaned descendant becomes its child; it kills all of its descendants after each case
  (`reap_children`), and the campaign kills the worker's descendants and process group with the worker
  (`kill_tree`). A process that detached while the worker crashed mid-case can still escape: nothing adopts it.
"""

from __future__ import annotations

import ctypes
import operator
import os
import signal
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
# modules whose attributes a case must leave as it found them: torch's public surface and the harness
_WATCHED_PREFIXES = ("moe_lora_fuzz.", "fuzz.", "reference.", "kernels.", "contract.")
_WATCHED_TORCH = ("torch", "torch.nn.functional", "torch.linalg", "torch.testing", "numpy", "triton.language")
_is_watched = operator.methodcaller("startswith", _WATCHED_PREFIXES)


def contain() -> bool:
    """In the worker: lead a process group of its own (so that what a case starts can be killed with it even
    after the worker died), die with the campaign (a kill -9 of the campaign must not leave a hanging case
    running) and adopt orphaned descendants (Linux only). False where the subreaper is refused."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # a campaign killed -9 takes a hanging case with it
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _children_map() -> dict:
    """{parent pid: [child pids]} for every process visible in /proc."""
    kids: dict = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def descendants(pid: int) -> list[int]:
    if not Path("/proc").is_dir():
        return []
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_all(pids: list[int]) -> int:
    n = 0
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
            n += 1
        except (ProcessLookupError, PermissionError):
            pass
    return n


def _task_children(pid: int) -> list[int] | None:
    """pid's children from /proc/PID/task/*/children (one small read per thread, not one per process of the
    host), or None where the kernel does not offer those files (then _children_map's scan)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out, seen = [], False
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children", "rb") as f:
                out += [int(c) for c in f.read().split()]
            seen = True
        except FileNotFoundError:
            continue  # the thread ended, or the kernel has no children files (seen stays False)
        except (OSError, ValueError):
            continue
    return out if seen else None


def reap_children(keep: frozenset = frozenset()) -> int:
    """In the worker, after a case: kill every descendant (those in `keep` and theirs excepted: e.g. a
    multiprocessing resource tracker) and collect the zombies; returns how many were killed. Runs after every
    case: the descendants are found from the worker's own threads' children files where the kernel has them
    (microseconds), else by a scan of every process's /proc/PID/stat (a millisecond or more on a busy host)."""
    me = os.getpid()
    mine = _task_children(me)
    if mine is None:
        kids = _children_map() if Path("/proc").is_dir() else {}
        mine, children = kids.get(me, []), kids.get
    else:
        children = lambda p, default: _task_children(p) or default  # noqa: E731 (the same signature as dict.get)
    victims, todo = [], [c for c in mine if c not in keep]
    while todo:
        p = todo.pop()
        victims.append(p)
        todo.extend(children(p, []))
    n = _kill_all(victims)
    while True:  # reap what died (our children, and adopted orphans)
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    return n


def kill_tree(pid: int) -> int:
    """In the campaign, as or after the worker is killed: its descendants and its process group (which
    outlives it when the worker died first)."""
    n = _kill_all(descendants(pid))
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    return n


def fingerprint() -> dict:
    """Identity of what the oracle relies on: every attribute of torch's public modules and of the harness's
    modules, torch.Tensor's methods, and torch's global numeric switches. Cheap: a shallow copy of each watched
    namespace (about 4,800 names a case, taken after every case; C-level copies, no hashing of code, no tuple per
    name: building one cost a millisecond per case), holding the values themselves so that an object freed by a
    replacement cannot pass for its successor by a reused id. `changed` compares them and skips dunder names."""
    mods = sys.modules
    names = [n for n in _WATCHED_TORCH if n in mods]
    names += filter(_is_watched, list(mods))
    spaces = {}
    for n in names:
        d = getattr(mods.get(n), "__dict__", None)
        if d:
            spaces[n] = d.copy()  # keys and values of one moment
    switches = None
    torch = mods.get("torch")
    if torch is not None:
        merged = {}  # inherited too, the first class of the MRO winning: setting Tensor.__add__ shadows TensorBase's
        for c in reversed(torch.Tensor.__mro__):
            merged.update(c.__dict__)
        spaces["torch.Tensor"] = merged
        switches = (
            torch.get_default_dtype(),
            torch.are_deterministic_algorithms_enabled(),
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision(),
            torch.is_grad_enabled(),
        )
    return {"spaces": spaces, "switches": switches}


def _same(before: dict, after: dict) -> bool:
    """Whether two copies of one namespace hold the same names, in the same order, bound to the same objects
    (C-level: identity only, no __eq__ of any value is called)."""
    return (
        len(before) == len(after)
        and all(map(operator.is_, before.values(), after.values()))
        and list(before) == list(after)
    )


def changed(before: dict, after: dict) -> str | None:
    """What a case replaced (None: nothing). Attributes added meanwhile (a lazy import binds a submodule on
    its package) are not changes; a replaced or deleted one is. A module's dunder names (its registry of warnings,
    its spec) are not watched; torch.Tensor's are."""
    hit = [("torch", "switches")] if before["switches"] != after["switches"] else []
    new = after["spaces"]
    for n, b in before["spaces"].items():
        a = new.get(n, {})
        if _same(b, a):  # the common case
            continue
        missing = object()
        hit += [
            (n, k)
            for k, v in b.items()
            if a.get(k, missing) is not v and (n == "torch.Tensor" or not str(k).startswith("__"))
        ]
    if not hit:
        return None
    shown = ", ".join(f"{m}.{a}" for m, a in hit[:3]) + (f" and {len(hit) - 3} more" if len(hit) > 3 else "")
    return f"the case replaced {shown} (a monkeypatch or a global switch)"
