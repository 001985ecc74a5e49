"""The worker answers a case first and checks its process afterwards (issue 29: the campaign records the answer
and draws the next case meanwhile). What must still hold (fuzz.runtime.sandbox, fuzz.execution.worker):
- a process a case tainted never judges the next case, and the taint is counted;
- a crash or hang is blamed on the case during which it happened: one after a case's answer is not the next
  case's finding (that case goes to a fresh worker);
- the processes a case left are killed and counted, the last case's too.

Each test drives the real Worker with a small implementation written to tmp_path that, on its first call, replaces
the worker's own post-case check (sandbox.fingerprint) or torch, once per test: that replacement is itself a taint.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from moe_lora_fuzz.fuzz.execution.worker import Worker
from moe_lora_fuzz.fuzz.space.case import Case

from tests.test_reliability import _alive_with

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.interpreter

HEAD = """import os, sys, time
sys.path.insert(0, {root!r})
from tests.example_impl import torch_moe_lora
from moe_lora_fuzz.fuzz.runtime import sandbox
PIDS = {pids!r}

def impl(**kw):
    with open(PIDS, "a") as f:
        f.write(f"{{os.getpid()}}\\n")
    torch_moe_lora(**kw)
    if not os.path.exists(PIDS + ".once"):  # the first call of the test, whichever process makes it
        open(PIDS + ".once", "w").close()
        first_call()
"""

# the check after the case waits until the test releases it: the answer must not wait for it
WAITS_FOR_RELEASE = """
def first_call():
    real = sandbox.fingerprint

    def held():
        end = time.monotonic() + 30
        while not os.path.exists({release!r}) and time.monotonic() < end:
            time.sleep(0.01)
        with open({release!r} + ".log", "a") as f:
            f.write("released\\n" if os.path.exists({release!r}) else "timed out\\n")
        return real()

    sandbox.fingerprint = held
"""

AFTER_THE_ANSWER = {
    "exits": "os._exit(3)",
    "raises": "raise RuntimeError('the check is broken')",
    "hangs": "time.sleep(3600)",
}
BREAKS_THE_CHECK = """
def first_call():
    def broken():
        {action}

    sandbox.fingerprint = broken
"""

# a watched name whose namespace takes 3 s to read: every check after a case is slow, and nothing is replaced
SLOWS_THE_CHECK = """
class SlowNamespace:
    @property
    def __dict__(self):
        time.sleep(3)
        return {{"constant": 1}}

def first_call():
    sys.modules["moe_lora_fuzz.fuzz.slow_namespace"] = SlowNamespace()
"""

LEAVES_A_CHILD_AND_PATCHES_TORCH = """
import subprocess
import torch

def first_call():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", {mark!r}], start_new_session=True)
    torch.matmul = lambda *a, **k: None
"""


def _impl(tmp_path: Path, body: str, **fmt) -> tuple[str, Path]:
    pids = tmp_path / "pids"
    path = tmp_path / "impl.py"
    path.write_text(HEAD.format(root=str(ROOT), pids=str(pids)) + body.format(**fmt))
    return f"{path}:impl", pids


def _cases(n: int) -> list[Case]:
    return [Case(seed=s, m=2, k_dim=8, n_dim=8) for s in range(1, n + 1)]


def _judge_each(w: Worker, pids: Path, timeouts: list[float]) -> tuple[list, list[set]]:
    """Judge len(timeouts) cases: their verdicts and, for each, the processes that ran the implementation on it
    (the oracle may call it more than once)."""
    verdicts, by, seen = [], [], len(pids.read_text().split()) if pids.exists() else 0
    for case, timeout in zip(_cases(len(timeouts)), timeouts, strict=True):
        verdicts.append(w.judge(case, timeout=timeout))
        lines = pids.read_text().split() if pids.exists() else []
        by.append({int(p) for p in lines[seen:]})
        seen = len(lines)
    return verdicts, by


def test_the_answer_does_not_wait_for_the_check_and_a_tainted_worker_judges_nothing_more(tmp_path):
    """Before: the worker fingerprinted itself before answering (a millisecond per case on the campaign's path).
    Now the answer of case 1 arrives while its check still waits (released only after the answer came); the check
    then sees the replaced function, and case 2 is judged by a fresh process, the taint counted."""
    release = tmp_path / "release"
    impl, pids = _impl(tmp_path, WAITS_FOR_RELEASE, release=str(release))
    w = Worker("cpu", impl)
    try:
        (v1,), (one,) = _judge_each(w, pids, [60])
        release.touch()  # only now may the check after case 1 finish
        (v2,), (two,) = _judge_each(w, pids, [60])
    finally:
        w.close()
    assert v1.kind == "pass" and v2.kind == "pass", (v1, v2)
    assert Path(f"{release}.log").read_text() == "released\n"  # the answer did not wait for the check
    assert w.tainted == 1 and "sandbox.fingerprint" in w.last_taint, w.last_taint
    assert len(one) == len(two) == 1 and not one & two and w.restarts == 1  # the tainted process judged no more


@pytest.mark.parametrize("what", sorted(AFTER_THE_ANSWER))
def test_a_failure_after_the_answer_is_not_the_next_cases_finding(tmp_path, what, monkeypatch):
    """The check after case 1 kills the process, raises or hangs. Case 1 was answered (pass); case 2 is not blamed:
    it goes to a fresh worker and passes, the broken process counted as tainted. Before, the check ran before the
    answer and case 1 became a crash or hang finding."""
    from moe_lora_fuzz.fuzz.execution import worker

    monkeypatch.setattr(worker, "AFTER_CASE_S", 3.0)  # a check not done after 3 s hung (30 s in campaigns)
    impl, pids = _impl(tmp_path, BREAKS_THE_CHECK, action=AFTER_THE_ANSWER[what])
    w = Worker("cpu", impl)
    try:
        verdicts, (one, two, three) = _judge_each(w, pids, [60, 60, 60])
    finally:
        w.close()
    assert [v.kind for v in verdicts] == ["pass"] * 3, verdicts
    why = {"exits": "the worker died", "raises": "raised RuntimeError: the check is broken", "hangs": "hung"}[what]
    assert w.tainted == 1 and why in w.last_taint, w.last_taint
    assert w.restarts == 1
    assert len(one) == 1 and len(two | three) == 1 and not one & two


def test_a_slow_check_after_a_case_does_not_count_against_the_next_case(tmp_path):
    """The check after case 1 takes 3 s (a watched namespace slow to read; nothing replaced, so no taint). Case 2,
    sent meanwhile with a 2 s timeout, gets its 2 s from when the worker takes it: it passes in the same worker.
    Before, the check ran before each answer, and counted against the case's own timeout (case 2: a hang)."""
    impl, pids = _impl(tmp_path, SLOWS_THE_CHECK)
    w = Worker("cpu", impl)
    try:
        verdicts, (one, two) = _judge_each(w, pids, [60, 2])
    finally:
        w.close()
    assert [v.kind for v in verdicts] == ["pass", "pass"], verdicts
    assert w.tainted == 0 and w.restarts == 0 and one == two


def test_the_last_cases_taint_and_leftover_process_are_counted_at_close(tmp_path):
    """The campaign's last case patches torch and leaves a detached process: its check runs after its answer, and
    close() still counts the taint and the process killed (report.json's "side effects contained" note)."""
    mark = f"moe-lora-fuzz-overlap-{os.getpid()}-{time.monotonic_ns()}"
    impl, _ = _impl(tmp_path, LEAVES_A_CHILD_AND_PATCHES_TORCH, mark=mark)
    w = Worker("cpu", impl)
    try:
        v = w.judge(_cases(1)[0], timeout=60)
    finally:
        w.close()
    left = _alive_with(mark)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert v.kind == "pass", v
    assert left == []
    assert w.tainted == 1 and "torch.matmul" in w.last_taint, w.last_taint
    assert w.reaped == 1
