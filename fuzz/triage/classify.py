"""The class of a root cause: what a kernel engineer does about it.

- `bug`: the implementation computes a wrong result (or crashes, raises, writes out of bounds) on a case
  inside what it declares. Also every cause that triage could not look at: unknown is never excused.
- `unchecked-precondition`: the case lies outside what the implementation or its calling convention
  declares (`--probe-contract` draws such cases, fuzz/space/capabilities.py), and the implementation neither
  refused it nor computed it right: a missing check, not a wrong computation.
- `precision`: a mismatch that lies within a documented lower-precision bound the oracle re-checks it
  against (fuzz.judgement.oracle): fp32 inputs reduced to TF32 (`_tf32_hint`), or split-K partial sums accumulated in
  the activation dtype (`_lowp_hint`). The cause carries the bound it meets (`bound`).
- `intermittent`: the same case fails on some runs and passes on others (fuzz.triage.intermittent); the cause
  carries its failure rate.

A campaign's exit code is 1 when a cause of a failing class exists: `bug` and `intermittent` unless
`--fail-on` names others (precision and unchecked preconditions are reported, and do not fail CI by default).
"""

from __future__ import annotations

CLASSES = ("bug", "intermittent", "precision", "unchecked-precondition")
FAILING = ("bug", "intermittent")
# text the oracle appends to a mismatch that meets a lower-precision bound -> the bound's name
PRECISION_HINTS = {
    "within the TF32 bound": "TF32 inputs (fp32 dot at tf32: 10-bit mantissa, relative 2^-11 per input)",
    "within the low-precision split-K bound": (
        "split-K partial sums accumulated in the activation dtype (bound + 2*SPLIT_K*u*|B|(|A||x|) per stage)"
    ),
}


def class_fields(kind: str, message: str, info: dict | None = None) -> dict:
    """{"class": ..., and "bound" for precision, "rate"/"rate_runs" for intermittent} of one cause, from its
    triage info (fuzz.triage.triager._info) when there is one, else from the finding's kind and message."""
    if info and info.get("class") == "intermittent":
        return {"class": "intermittent", "rate": info.get("rate"), "rate_runs": info.get("rate_runs")}
    verdict = (info or {}).get("verdict") or {}
    if verdict and not info.get("via", "").startswith("provisional"):
        kind, message = verdict["kind"], verdict.get("message", message)
    elif verdict.get("kind") == "mismatch" and _precision_bound(verdict.get("message", "")):
        # a provisional cause whose minimised case (a twin's, for a metamorphic finding) fails only within a
        # lower-precision bound: the disagreement is that precision effect (vLLM 0.34's fp16 shrink split-K: a
        # configuration twin "beyond 2x", minimised to a mismatch within the split-K bound, was called a bug)
        kind, message = "mismatch", verdict["message"]
    if kind == "unchecked-precondition":
        return {"class": "unchecked-precondition"}
    if kind == "mismatch" and (bound := _precision_bound(message)):
        return {"class": "precision", "bound": bound}
    return {"class": "bug"}


def _precision_bound(message: str) -> str | None:
    """The lower-precision bound a mismatch's message says it meets, if any."""
    return next((bound for hint, bound in PRECISION_HINTS.items() if hint in message), None)


def counts(causes: list[dict]) -> dict:
    """Causes per class, every class listed (0 when absent), in CLASSES order."""
    out = dict.fromkeys(CLASSES, 0)
    for c in causes:
        out[c.get("class", "bug")] += 1
    return out


def summary(causes: list[dict]) -> str:
    """ "3 root causes: 1 bug, 1 intermittent, 1 precision, 0 unchecked-precondition"."""
    n = counts(causes)
    return f"{len(causes)} root causes: " + ", ".join(f"{v} {k}" for k, v in n.items())


def parse_fail_on(text: str) -> tuple:
    """--fail-on: comma-separated classes, or "all"; ValueError naming the bad one."""
    if text.strip() == "all":
        return CLASSES
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    for name in names:
        if name not in CLASSES:
            raise ValueError(f"unknown class {name!r} (one of {', '.join(CLASSES)}, or all)")
    return names


def failing(causes: list[dict], fail_on: tuple = FAILING) -> bool:
    return any(c.get("class", "bug") in fail_on for c in causes)
