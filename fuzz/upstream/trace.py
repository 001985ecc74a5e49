"""Which Python-level branches of an upstream `_fused_moe_lora` ran, read from the code, not from a table.

The wrapper's branches are the host functions of the kernel module that `_fused_moe_lora` calls by name
(the names in its code object that are functions defined in that module: vLLM 0.34's
`_run_fused_moe_lora_small_batch`, `_run_fused_moe_lora_one_shot`, `_fused_moe_lora_shrink`,
`_fused_moe_lora_expand`). Every host function of the module is wrapped so that a call records its name; after
a call of `_fused_moe_lora`, `features()` says which declared branches ran, with how the call was made
(`naive` for `sorted_token_ids=None`, `fully_sharded`), and which stand-ins the module has read. The oracle adds
them to the case's edges; report.json's `upstream` section counts them and lists `missing_edges`.

The wrapped `_fused_moe_lora` also runs inside the file's import environment (standins.Environment.active)
and turns a failure on a stand-in gap into `HarnessGap` (the verdict `harness-error`).
"""

from __future__ import annotations

import functools
import inspect
import re

from .standins import Environment, HarnessGap

FUSED = "_fused_moe_lora"
BRANCH = "branch:"
STANDIN = "standin:"


_SWITCH = re.compile(r"^_?[A-Z0-9_]*_MAX_(RANK|TOKENS)$")


def switches(module) -> dict:
    """The size switches of `_fused_moe_lora`, read from the constants its code names (vLLM 0.34:
    `_FUSED_MOE_LORA_ONE_SHOT_MAX_RANK` 128 -> {"rank": [128]}, `FUSED_MOE_LORA_TWO_KERNEL_MAX_TOKENS` 64 ->
    {"m": [64]}): campaigns put a share of cases on both sides of each (fuzz.targets.impls.ImplProfile.fit)."""
    out: dict = {}
    for name in _names(getattr(module, FUSED, None)):
        m = _SWITCH.match(name)
        value = getattr(module, name, None)
        if m and type(value) is int and value > 0:
            out.setdefault("rank" if m.group(1) == "RANK" else "m", []).append(value)
    return out


def _names(fn) -> set[str]:
    """The global names the code of `fn` uses, through its decorators (`__wrapped__`, e.g. inference_mode)."""
    out, seen = set(), set()
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        code = getattr(fn, "__code__", None)
        out |= set(code.co_names) if code is not None else set()
        fn = getattr(fn, "__wrapped__", None)
    return out


class Tracer:
    def __init__(self, module, env: Environment | None):
        self.env = env
        self.calls: list[str] = []
        self.how: list[str] = []
        host = {
            n: f
            for n, f in vars(module).items()
            if inspect.isfunction(f) and f.__module__ == module.__name__ and not n.startswith("__")
        }
        fused = getattr(module, FUSED, None)
        fused = fused if callable(fused) else None
        names = _names(fused)
        self.declared = sorted(n for n in names if n in host and n != FUSED)
        for n, f in host.items():
            if n != FUSED:
                setattr(module, n, self._recording(n, f))
        if fused is not None:
            setattr(module, FUSED, self._entry(fused))

    def _recording(self, name: str, f):
        @functools.wraps(f)
        def recorded(*args, **kwargs):
            self.calls.append(name)
            return f(*args, **kwargs)

        return recorded

    def _entry(self, f):
        sig = inspect.signature(f)

        @functools.wraps(f)
        def fused(*args, **kwargs):
            self.calls.clear()
            try:
                bound = sig.bind_partial(*args, **kwargs).arguments
            except TypeError:
                bound = {}
            self.how = [
                "naive" if "sorted_token_ids" in bound and bound["sorted_token_ids"] is None else "aligned",
                *(["fully_sharded"] if bound.get("fully_sharded") else []),
            ]
            if self.env is None:
                return f(*args, **kwargs)
            with self.env.active():
                try:
                    return f(*args, **kwargs)
                except Exception as e:
                    gap = self.env.gap_in(e)
                    if gap:
                        raise HarnessGap(gap) from e
                    raise

        return fused

    def standins(self) -> list[str]:
        return self.env.standins() if self.env is not None else []

    def features(self) -> list[str]:
        """The last call's branches (`branch:<name>`, `branch:<name>+naive`, ...) and the stand-ins read."""
        out = []
        for name in dict.fromkeys(c for c in self.calls if c in self.declared):
            out.append(BRANCH + name)
            out += [f"{BRANCH}{name}+{h}" for h in self.how]
        return out + [STANDIN + s for s in self.standins()]


def summary(settings: dict | None, edges: dict) -> dict | None:
    """report.json's `upstream` section from an upstream adapter's settings and the campaign's edge counts."""
    if not settings or "branches" not in settings:
        return None
    declared = list(settings["branches"])
    reached = {e[len(BRANCH) :]: n for e, n in sorted(edges.items()) if e.startswith(BRANCH)}
    return {
        "convention": settings.get("convention"),
        "source": settings.get("source"),
        "release": settings.get("release"),
        "branches_declared": declared,
        "branches": reached,
        "missing_edges": [b for b in declared if b not in reached],
        "standins": sorted(e[len(STANDIN) :] for e in edges if e.startswith(STANDIN)),
    }
