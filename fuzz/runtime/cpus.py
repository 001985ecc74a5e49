"""Where a GPU campaign's processes run: its compile-ahead helpers (fuzz.campaign.precompile) on the host's CPUs
less the first few, which, with their cores' other hardware threads, stay the campaign's and its worker's.
"""

from __future__ import annotations

import os

KEEP_CPUS = 4  # logical CPUs helpers never run on: the campaign's and its worker's (default_processes leaves 4)
GPU_WORKER_THREADS = 1  # torch's host threads in a GPU worker (worker_threads)


def helper_cpus() -> frozenset | None:
    """The CPUs helpers run on: this process's, less the first KEEP_CPUS (with their cores' other hardware
    threads), which stay the campaign's and its worker's (busy CPUs slow a worker's GPU-waiting phases:
    worker_threads). None (not pinned): too few CPUs, no affinity here, or MOE_LORA_FUZZ_PIN_HELPERS=0."""
    if os.environ.get("MOE_LORA_FUZZ_PIN_HELPERS") == "0" or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = set(os.sched_getaffinity(0))
    keep: set = set()
    for cpu in sorted(allowed):
        if len(keep) >= KEEP_CPUS:
            break
        keep |= {cpu} | (_siblings(cpu) & allowed)
    return frozenset(allowed - keep) or None


def worker_cpus() -> frozenset | None:
    """The CPUs helper_cpus keeps for the campaign's worker, where MOE_LORA_FUZZ_PIN_WORKER=1 pins it (a
    measurement knob, issue 29: the worker left anywhere may share a core with a compiling helper)."""
    if os.environ.get("MOE_LORA_FUZZ_PIN_WORKER") != "1":
        return None
    helpers = helper_cpus()
    return None if helpers is None else frozenset(os.sched_getaffinity(0)) - helpers or None


def worker_threads(device: str) -> int | None:
    """torch's host (OpenMP) threads in a GPU campaign's worker: GPU_WORKER_THREADS, or MOE_LORA_FUZZ_WORKER_THREADS
    (0: torch's default, one per CPU). A GPU worker's host work is small tensors; with one thread per CPU, every
    parallel region waits for threads that busy neighbours (helpers compiling) keep off a CPU: on an H100 the fuzz
    loop's GPU-waiting phases took 6 to 9 times as long beside 12 processes spinning at nice 10 (docs/speed.md,
    issue 29). None: leave torch's default (the CPU interpreter's kernels use those threads). A bad knob is an
    error on any device."""
    n = env_count("MOE_LORA_FUZZ_WORKER_THREADS", "threads")
    if device != "cuda":
        return None
    return GPU_WORKER_THREADS if n is None else n or None


def env_count(name: str, what: str) -> int | None:
    """A measurement knob that counts something (threads, helpers): the environment variable's whole number, None
    when unset; anything else a ValueError naming the variable and its rule."""
    text = os.environ.get(name, "").strip()
    if text and not text.isdigit():
        raise ValueError(f"{name} must be a whole number of {what}, >= 0 (got {text!r})")
    return int(text) if text else None


def _siblings(cpu: int) -> set:
    """The logical CPUs of `cpu`'s core (Linux's topology files; none where they are missing)."""
    try:
        with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
            text = f.read().strip()
    except OSError:
        return set()
    out: set = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out
