"""What the oracle says about one case: the verdict kinds and their families, `Verdict`, its signature (what
makes two findings the same), and the failure detail of an exception or a crash (the frame in the
implementation, never the harness's). The checks that produce it are fuzz.judgement.oracle's.
"""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from moe_lora_fuzz.contract import UNIT_ROUNDOFF
from moe_lora_fuzz.fuzz.space.case import Case

SAFETY = 2.0
UNIT = UNIT_ROUNDOFF
NAIVE_LIMIT = 400_000  # multiply-adds up to which the naive loop reference also runs
NAIVE_EVERY = 8  # on a GPU, one case in this many gets the naive cross-check up front (compare.naive_due)
DIAGNOSE_MARGIN = 3.0  # finite guard contents for the diagnosis rerun (the first run has NaN)
KINDS = (
    "reference-disagreement",
    "exception",
    "crash",
    "oob-write",
    "oob-read",
    "uninit-read",
    "untouched-changed",
    "nonfinite",
    "mismatch",
    "metamorphic",
    "vacuous",
    "hang",
    "unchecked-precondition",
    "harness-error",
)
PASSING = ("pass", "refused")  # refused: a clean refusal of a case outside the declared space (--probe-contract)
# Kind families: kinds that one cause can produce depending on the data are one family, so triage can
# group them. A wrong row index gives oob-read when the bad row lies past the buffer and mismatch when it
# lies inside; a missing launch gives vacuous or mismatch; a split-K race gives metamorphic or uninit-read.
# All of them are "the values in out are wrong". A stray write, an exception and a crash are observed
# differently and are never merged with wrong values (nor with each other); exceptions and crashes are
# further split by their failure detail (exception type + first frame, or how the process died).
FAMILIES = {
    "reference-disagreement": "reference",
    "exception": "exception",
    "crash": "crash",
    "oob-write": "stray-write",
    "oob-read": "wrong-output",
    "uninit-read": "wrong-output",
    "untouched-changed": "wrong-output",
    "nonfinite": "wrong-output",
    "mismatch": "wrong-output",
    "metamorphic": "wrong-output",
    "vacuous": "wrong-output",
    "hang": "crash",
    "unchecked-precondition": "unchecked-precondition",
    "harness-error": "harness",  # a stand-in gap (fuzz.upstream.standins): stops the campaign, never a finding
}


@dataclass(frozen=True)
class Verdict:
    kind: str  # "pass" or one of KINDS
    impl: str
    signature: str
    message: str = ""
    max_ratio: float = 0.0  # worst |error| / bound over the delta's elements
    worst: list = field(default_factory=list)  # up to 5 elements: index, got, expected, bound
    seconds: float = 0.0
    features: list = field(default_factory=list)  # data-dependent edges the case hit (fuzz.space.coverage)
    failure: str = ""  # exception/crash detail in the signature: "TypeName@path:function" or how it died
    impl_settings: dict | None = None  # the implementation's adapter settings, when it declares `settings`

    @property
    def failed(self) -> bool:
        return self.kind not in PASSING

    @property
    def family(self) -> str:
        return family(self.kind)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "Verdict":
        """The inverse of to_dict, checked field by field: a ValueError names the field (`verdict.<name>`)."""

        def need(name: str, typ: type):
            if name not in d:
                raise ValueError(f"verdict.{name}: missing")
            if not isinstance(d[name], typ) or isinstance(d[name], bool):
                raise ValueError(f"verdict.{name}: wrong type {type(d[name]).__name__}, expected {typ.__name__}")
            return d[name]

        if not isinstance(d, dict):
            raise ValueError("verdict: expected an object")
        kind = need("kind", str)
        if kind != "pass" and kind not in KINDS:
            raise ValueError(f"verdict.kind: unknown kind {kind!r}")
        numbers = {}
        for name in ("max_ratio", "seconds"):
            v = d.get(name, 0.0)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ValueError(f"verdict.{name}: wrong type {type(v).__name__}, expected a number")
            numbers[name] = float(v)
        worst, features = d.get("worst", []), d.get("features", [])
        if not isinstance(worst, list):
            raise ValueError("verdict.worst: wrong type")
        if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
            raise ValueError("verdict.features: expected a list of strings")
        failure, settings = d.get("failure", ""), d.get("impl_settings")
        if not isinstance(failure, str):
            raise ValueError("verdict.failure: expected a string")
        if settings is not None and not isinstance(settings, dict):
            raise ValueError("verdict.impl_settings: expected an object or null")
        message = d.get("message", "")
        if not isinstance(message, str):
            raise ValueError(f"verdict.message: wrong type {type(message).__name__}, expected str")
        return cls(
            kind,
            need("impl", str),
            need("signature", str),
            message,
            numbers["max_ratio"],
            worst,
            numbers["seconds"],
            features,
            failure,
            settings,
        )


def family(kind: str) -> str:
    """The kind family ("wrong-output", "stray-write", "exception", "crash", "reference"); "" for pass."""
    return FAMILIES.get(kind, "")


def signature(kind: str, impl: str, case: Case, failure: str = "") -> str:
    """A raw finding's signature: kind, the failure detail for exceptions and crashes (exception type and
    first frame inside the implementation, or how the process died), implementation, and the case's
    coarse class. The class stays here only as a discovery key: a campaign keeps one raw finding (and
    repro file) per class, which gives triage distinct starting points; what identifies a failure is the
    root cause (fuzz.triage.triager), which keeps a class knob only where the minimiser shows it matters."""
    detail = f"{failure}|" if failure else ""
    return f"{kind}|{detail}{impl}|{case.coarse_class}"


_REPO = str(Path(__file__).resolve().parents[2])
_HARNESS_DIRS = tuple(f"{_REPO}/{d}/" for d in ("fuzz", "reference"))  # our harness: never "the implementation"


def _library_frame(filename: str) -> bool:
    import sysconfig

    if "site-packages" in filename or "dist-packages" in filename or filename.startswith("<"):
        return True
    stdlib = sysconfig.get_paths()["stdlib"]
    return filename.startswith(stdlib)


def _frame_name(filename: str, function: str) -> str:
    """path:function, no line number (lines move with every edit) and no absolute prefix: a path inside
    this repository is relative to its root, any other file is named by its base name."""
    root = _REPO + "/"
    path = filename[len(root) :] if filename.startswith(root) else Path(filename).name
    return f"{path}:{function}"


def exception_failure(e: BaseException) -> str:
    """ "TypeName@frame": the exception's type and the innermost frame inside the implementation, i.e. the
    innermost frame that is not the harness (fuzz/, reference/), the standard library or an installed
    package such as torch or triton. For our kernels that is a frame in kernels/. Without such a frame,
    the innermost frame of all."""
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if not _library_frame(f.filename) and not f.filename.startswith(_HARNESS_DIRS)]
    pick = own[-1] if own else (frames[-1] if frames else None)
    where = _frame_name(pick.filename, pick.name) if pick else "?"
    return f"{type(e).__qualname__}@{where}"


def crash_failure(why: str) -> str:
    """How a worker died, without addresses or timings: "exit-11", "hang", or the error type of a broken
    process ("broke:RuntimeError")."""
    import re

    if "hang" in why:
        return "hang"
    m = re.search(r"exit code (-?\d+|None)", why)
    if m:
        return f"exit{m.group(1)}"
    m = re.search(r"worker broke(?: on this case \(|: )([A-Za-z_][\w.]*)", why)
    return f"broke:{m.group(1)}" if m else "died"
