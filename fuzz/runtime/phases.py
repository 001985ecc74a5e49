"""Where a campaign's time goes: named phases, timed exclusively (a nested phase's time is not also its
parent's) under their path ("twins/impl/jit": compiling inside the implementation inside a twin), and
Triton's JIT misses (kernel variants compiled or loaded from the disk cache) as a phase of their own, so
"the implementation" and "compiling it" are told apart for any Triton implementation.

The worker takes its totals after every case and sends them with the verdict; the campaign adds its own
(generation, the round trip to the worker, coverage, report writes, triage) and writes them to report.json.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from contextlib import contextmanager

_spent: defaultdict = defaultdict(float)
_counts: Counter = Counter()
_stack: list = []  # [path, start, time of nested phases]


def _push(name: str) -> None:
    path = f"{_stack[-1][0]}/{name}" if _stack else name
    _stack.append([path, time.perf_counter(), 0.0])


def _pop(name: str) -> None:
    """Close `name` (and anything left open inside it, e.g. a compile that raised before its end hook)."""
    while _stack:
        path, start, nested = _stack.pop()
        elapsed = time.perf_counter() - start
        _spent[path] += elapsed - nested
        _counts[path] += 1
        if _stack:
            _stack[-1][2] += elapsed
        if path.rpartition("/")[2] == name:
            return


@contextmanager
def phase(name: str):
    _push(name)
    try:
        yield
    finally:
        _pop(name)


def take() -> dict:
    """{phase: [seconds, count]} since the last take, and reset."""
    out = {k: [round(v, 6), _counts[k]] for k, v in _spent.items()}
    _spent.clear()
    _counts.clear()
    return out


def add(totals: dict, more: dict) -> dict:
    """Sum `more` ({phase: [seconds, count]}) into `totals` in place."""
    for k, (s, n) in more.items():
        t = totals.setdefault(k, [0.0, 0])
        t[0] += s
        t[1] += n
    return totals


def table(totals: dict, wall: float) -> list[str]:
    """Markdown rows, largest share first: phase, seconds, count, share of `wall`."""
    rows = ["| phase | seconds | count | share |", "|---|---|---|---|"]
    for k, (s, n) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        rows.append(f"| {k} | {s:.2f} | {n} | {100 * s / max(wall, 1e-9):.1f}% |")
    return rows


_installed = False


def count_jit() -> None:
    """Time Triton's in-memory cache misses as the phase `jit` (both hooks chain to any already set)."""
    global _installed
    if _installed:
        return
    try:
        from triton import knobs

        runtime = knobs.runtime
        before_hook, after_hook = runtime.jit_cache_hook, runtime.jit_post_compile_hook
    except (ImportError, AttributeError):  # an older Triton: the time stays in the implementation's phase
        return

    def before(*args, **kw):
        _push("jit")
        return before_hook(*args, **kw) if before_hook else False

    def after(*args, **kw):
        _pop("jit")
        return after_hook(*args, **kw) if after_hook else None

    runtime.jit_cache_hook, runtime.jit_post_compile_hook = before, after
    _installed = True
