"""Issue 29 (gpu step issue29c): the worker's per-case check on this host, after a few cases of ours. Prints
milliseconds per call of sandbox.fingerprint + changed (now: namespace copies compared by identity), of the
former per-name id dict (rebuilt here for the comparison), of reap_children, and of a pipe round trip."""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from itertools import repeat
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _ids_fingerprint() -> dict:
    """The fingerprint before issue 29's loop work: one (module, name) -> id entry per watched name."""
    from moe_lora_fuzz.fuzz.runtime import sandbox

    names = [n for n in sandbox._WATCHED_TORCH if n in sys.modules]
    names += [n for n in list(sys.modules) if n.startswith(sandbox._WATCHED_PREFIXES)]
    ids = {}
    for n in names:
        d = getattr(sys.modules[n], "__dict__", None)
        if d:
            d = dict(d)
            ids.update(zip(zip(repeat(n), d.keys()), map(id, d.values()), strict=True))
    import torch

    merged = {}
    for c in reversed(torch.Tensor.__mro__):
        merged.update(zip(c.__dict__.keys(), map(id, c.__dict__.values()), strict=True))
    ids.update(zip(zip(repeat("torch.Tensor"), merged.keys()), merged.values(), strict=True))
    return ids


def _echo(conn) -> None:
    while (msg := conn.recv()) is not None:
        conn.send(msg)


def _per_call_ms(fn, n: int = 300) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return 1e3 * (time.perf_counter() - t0) / n


def main() -> None:
    import torch
    from moe_lora_fuzz.fuzz.execution.worker import CampaignConfig, _judge_here, case_for
    from moe_lora_fuzz.fuzz.runtime import sandbox
    from moe_lora_fuzz.fuzz.targets.impls import resolve

    device = "cuda" if torch.cuda.is_available() else "cpu"
    impl = resolve("ours")
    cfg = CampaignConfig(device=device, profile="nightly")
    for i in range(3, 13):  # the modules a campaign's worker has imported by then
        _judge_here({"mode": "fuzz", "metamorphic": True, "guards": True}, case_for(cfg, i), impl, "ours", device)
    before, after = sandbox.fingerprint(), sandbox.fingerprint()
    old_before, old_after = _ids_fingerprint(), _ids_fingerprint()
    names = sum(len(v) for v in before["spaces"].values())
    print(f"device {device}; {len(sys.modules)} modules loaded, {names} names watched")
    print(f"fingerprint now:        {_per_call_ms(sandbox.fingerprint):.3f} ms")
    print(f"changed now:            {_per_call_ms(lambda: sandbox.changed(before, after)):.3f} ms")
    print(f"fingerprint before:     {_per_call_ms(_ids_fingerprint):.3f} ms (ids per name)")
    print(f"changed before (dict ==): {_per_call_ms(lambda: old_before == old_after):.3f} ms")
    print(f"reap_children:          {_per_call_ms(sandbox.reap_children):.3f} ms")
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_echo, args=(there,), daemon=True)
    proc.start()
    msg = {"case": case_for(cfg, 20), "metamorphic": True}
    here.send(msg), here.recv()
    print(f"pipe round trip (a case): {_per_call_ms(lambda: (here.send(msg), here.recv()), 2000):.3f} ms")
    here.send(None)
    proc.join(5)


if __name__ == "__main__":
    main()
