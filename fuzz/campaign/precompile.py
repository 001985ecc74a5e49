"""Compiling ahead on the host's cores: helper processes run the first cases of every compile class the
campaign is about to meet (fuzz.space.generate.Classes), the candidates triage's minimiser is about to try, and
the cases variant drawing will explore (fuzz.campaign.variant_draw: those wait in `warmed` once run). A helper
runs only the implementation, on the case and its configuration twin (fuzz.judgement.oracle.compile_ahead): no
reference, no judgement, so the campaign's worker keeps the GPU (helpers that judged whole cases slowed its GPU
phases three to eight times on an H100). What they
leave behind is Triton's disk cache, so the campaign's own worker loads each kernel variant instead of compiling it.

This works for any implementation: the helpers run the implementation itself on the same cases, so they meet
the same variants, whatever the kernels' constexprs and specialisations are. A helper that dies or
hangs on a case is replaced (its case is the campaign's to judge); after too many replacements precompiling
stops, and the campaign goes on compiling for itself. A campaign starts START_HELPERS helpers; one more joins (up
to its limit) whenever all are busy and the campaign is about to need what waits: a warm night needs few, and a
dozen starting together took the host's cores from the worker's own start.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import Counter, deque

from moe_lora_fuzz.fuzz.runtime import cpus

PER_CLASS = 2  # cases per class judged ahead: M moves the intermediate's slice stride between two classes
LOOKAHEAD = 400  # how far ahead of the campaign (in its case indices) classes are looked for
MAX_RESTARTS = 20
START_HELPERS = 2  # helpers started with the campaign; more join, up to its limit, while they fall behind it
GROW_EVERY_S = 0.5  # at most one helper joins per this many seconds (each start costs the host seconds of CPU)
BEHIND = 16  # the campaign this many of its cases from a class case no helper has taken: the helpers are behind


def default_processes(device: str, shards_here: int = 1) -> int:
    """Helpers for one campaign: the host's cores less a few for the campaign itself, shared by its shards and by
    pytest-xdist's workers (each runs its own campaigns: twelve of them with twelve helpers each were 150 processes
    and as many CUDA contexts on one GPU)."""
    if device != "cuda":
        return 0  # the interpreter compiles nothing
    sharers = max(1, shards_here) * max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
    return max(0, min(12, ((os.cpu_count() or 1) - 4) // sharers))


def check_knobs(device: str) -> None:
    """The environment's measurement knobs of a campaign's processes (issue 29), checked before it starts: a bad
    value is a usage error (ValueError naming the variable and its rule), not a worker or helper dying."""
    cpus.worker_threads(device)
    _check_helpers_build()
    _first_helpers()


def _check_helpers_build() -> None:
    """MOE_LORA_FUZZ_HELPERS_BUILD (a measurement knob, issue 29: where helpers build their cases, read by each
    helper: fuzz.execution.worker) is checked by the campaign, so a bad value is its error, not a helper dying
    on every case."""
    from moe_lora_fuzz.fuzz.data.tensors import WHERE

    build = os.environ.get("MOE_LORA_FUZZ_HELPERS_BUILD", "auto")
    if build not in WHERE:
        raise ValueError(f"MOE_LORA_FUZZ_HELPERS_BUILD must be one of {', '.join(map(repr, WHERE))} (got {build!r})")


def _first_helpers() -> int:
    """START_HELPERS, or MOE_LORA_FUZZ_HELPERS_START (a measurement knob, issue 29: helpers started during a
    campaign may slow its worker)."""
    n = cpus.env_count("MOE_LORA_FUZZ_HELPERS_START", "helpers")
    return START_HELPERS if n is None else n


class _Helper:
    def __init__(self, device: str, impl: str, cpus: frozenset | None = None):
        from moe_lora_fuzz.fuzz.execution.worker import _worker_main

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        args = (child, device, impl, os.devnull, True)
        self.proc = ctx.Process(target=_worker_main, args=args, kwargs={"cpus": cpus}, daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.busy_since: float | None = None
        self.explored = None  # the case of the exploring queue it runs (Precompiler.explore), if it runs one
        self.compiled = Counter()  # Triton's events in this helper (fuzz.runtime.variants): compiled, loaded

    def poll(self, done: deque) -> bool:
        """Take every answer (an explored case it finished goes to `done`); False if the process is gone (died,
        or could not load the implementation)."""
        try:
            while self.conn.poll():
                msg = self.conn.recv()
                if "fatal" in msg or "broken" in msg:
                    return False
                self.ready = self.ready or "ready" in msg
                if "verdict" in msg:
                    self.busy_since = None
                    got = msg.get("variants") or {}
                    self.compiled.update({k: got.get(k, 0) for k in ("compiled", "loaded")})
                    if self.explored is not None:
                        done.append(self.explored)
                        self.explored = None
        except (EOFError, OSError):
            return False
        return self.proc.is_alive()

    def send(self, case, twins: bool = True, explored: bool = False) -> None:
        self.conn.send({"case": case, "metamorphic": twins, "guards": True, "mode": "compile", "probe": ""})
        self.busy_since = time.monotonic()
        self.explored = case if explored else None

    def kill(self) -> None:
        if self.proc.is_alive():
            from moe_lora_fuzz.fuzz.runtime.sandbox import kill_tree

            kill_tree(self.proc.pid)  # it runs the implementation too: what its cases started goes with it
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class Precompiler:
    """`at(index)` as the campaign moves, `feed()` while it waits on its worker: idle helpers get the next
    cases beyond the campaign's that open a compile class or are its second case."""

    def __init__(self, cfg, processes: int, profile):
        self.cfg, self.profile = cfg, profile
        # a warm campaign needs few helpers, and a dozen starting at once slow the worker's own start for seconds
        self.limit, self.grown = processes, time.monotonic()
        self.cpus = cpus.helper_cpus()
        _check_helpers_build()
        self.helpers = [self._new() for _ in range(min(processes, _first_helpers()))]
        self.sent: Counter = Counter()  # class key -> cases sent
        self.pending: deque = deque()  # indices still to send, in order
        self.urgent: deque = deque()  # cases the worker is about to judge (a minimisation's next candidates)
        self.exploring: deque = (
            deque()
        )  # cases predicted to open a new variant, compiled before the campaign takes them
        self.warmed: deque = deque()  # ... and those done: their binaries are in Triton's disk cache
        self.scan = True  # look ahead in the class stream (off while variant drawing plans the cases)
        self.scanned = cfg.shard[0]  # next index to look at
        self.restarts = 0
        self.cases = 0
        self.index = cfg.shard[0]

    def at(self, index: int) -> None:
        """The campaign is about to judge case `index`."""
        self.index = index
        self.feed()

    def feed(self) -> None:
        from moe_lora_fuzz.fuzz.execution.worker import case_for, compile_class, runs_twin

        index, step = self.index, self.cfg.shard[1]
        while self.scan and self.scanned <= index + LOOKAHEAD * step:
            i, self.scanned = self.scanned, self.scanned + step
            cls = compile_class(self.cfg, i)
            key = ("own", i) if cls is None else cls
            if self.sent[key] < PER_CLASS:
                self.sent[key] += 1
                self.pending.append(i)
        while self.pending and self.pending[0] <= index:  # the campaign got there first
            self.pending.popleft()
        for n, h in enumerate(self.helpers):
            if not h.poll(self.warmed) or (
                h.busy_since is not None and time.monotonic() - h.busy_since > self.cfg.timeout
            ):
                if h.explored is not None:  # it died or hung on it: the campaign's to judge (a finding, likely)
                    self.warmed.append(h.explored)
                h.kill()
                self.restarts += 1
                self.helpers[n] = h = self._new() if self.restarts <= MAX_RESTARTS else None
            if h is None or not h.ready or h.busy_since is not None:
                continue
            try:
                if self.urgent:
                    h.send(self.urgent.popleft(), twins=False)
                    self.cases += 1
                elif self.exploring:
                    case = self.exploring.popleft()
                    h.send(case, twins=runs_twin(self.cfg, case), explored=True)
                    self.cases += 1
                elif self.pending:
                    h.send(case_for(self.cfg, self.pending.popleft(), self.profile))
                    self.cases += 1
            except (BrokenPipeError, ConnectionError, OSError):  # died since its poll: replaced on the next feed
                pass
        self.helpers = [h for h in self.helpers if h is not None]
        self._grow(index + BEHIND * step)

    def _grow(self, near: int) -> None:
        """One more helper when every helper is busy or starting and work waits that the campaign needs soon:
        triage's candidates, cases to explore, or a class case within BEHIND cases of the campaign."""
        behind = self.urgent or self.exploring or (self.pending and self.pending[0] <= near)
        if (
            not behind
            or len(self.helpers) >= self.limit
            or self.restarts > MAX_RESTARTS
            or time.monotonic() - self.grown < GROW_EVERY_S
            or any(h.ready and h.busy_since is None for h in self.helpers)
        ):
            return
        self.grown = time.monotonic()
        self.helpers.append(self._new())

    def _new(self) -> _Helper:
        return _Helper(self.cfg.device, self.cfg.impl, self.cpus)

    def ahead(self, cases: list) -> None:
        """Cases the worker is about to judge outside the campaign's stream (triage's minimiser): they go
        before the stream's, replacing the last such list (a new pass of the walk makes it stale)."""
        self.urgent = deque(cases)
        self.feed()

    def explore(self, cases: list) -> None:
        """Cases predicted to open a new kernel variant, in no campaign index (fuzz.campaign.variant_draw): each is
        run once by an idle helper, after triage's candidates, then waits in `warmed` for the campaign to take it."""
        self.exploring.extend(cases)
        self.feed()

    def exploring_count(self) -> int:
        """Explored cases queued, running in a helper, or ready."""
        return len(self.exploring) + len(self.warmed) + sum(h.explored is not None for h in self.helpers)

    def summary(self) -> dict:
        """What the helpers did: variants compiled (the compiler ran) and loaded (found in Triton's disk cache) by
        the helpers alive at the end (a replaced helper's are lost)."""
        done = sum((h.compiled for h in self.helpers), Counter())
        return {
            "processes": len(self.helpers),
            "limit": self.limit,
            "cases": self.cases,
            "restarts": self.restarts,
            "compiled": done["compiled"],
            "loaded": done["loaded"],
        }

    def close(self) -> None:
        for h in self.helpers:
            h.kill()
        self.helpers = []
