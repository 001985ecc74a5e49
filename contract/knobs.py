"""Per-field metadata of a knob, declared once on the dataclass field that holds it: its type and valid range.
Validation (Case, TileConfig, MoeLoraConfig), the minimiser's knob lists and coverage's are derived from it, so a
new knob is written once. Its simplest value is the field's default (what minimising moves toward)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


def _is_int(v) -> bool:
    return type(v) is int  # bool and float are refused: knobs are exact integers


@dataclass(frozen=True)
class Knob:
    kind: str  # "int" | "pow2" | "options" | "flag" | "other" (validated by its owner)
    lo: int | None = None
    hi: int | None = None  # inclusive
    options: tuple = ()  # simplest first
    rule_text: str = ""  # overrides the generated rule in messages
    why: str = ""
    # a value with no order or meaning of its own (the data seed): the minimiser only resets it to its default,
    # since a smaller one is not simpler, and coverage does not count its values
    opaque: bool = False

    # ---- constructors ------------------------------------------------------------------------------
    @classmethod
    def integer(cls, lo: int, hi: int, **kw) -> "Knob":
        return cls("int", lo, hi, **kw)

    @classmethod
    def pow2(cls, lo: int, hi: int, **kw) -> "Knob":
        return cls("pow2", lo, hi, **kw)

    @classmethod
    def choice(cls, options: tuple, **kw) -> "Knob":
        return cls("options", options=tuple(options), **kw)

    @classmethod
    def flag(cls, **kw) -> "Knob":
        return cls("flag", **kw)

    # ---- validity ----------------------------------------------------------------------------------
    def rule(self) -> str:
        if self.rule_text:
            return self.rule_text
        if self.kind == "int":
            return f"must be an int in [{self.lo}, {self.hi}]"
        if self.kind == "pow2":
            return f"must be a power of two in [{self.lo}, {self.hi}]" + (f" ({self.why})" if self.why else "")
        if self.kind == "options":
            return "must be one of " + ", ".join(str(o) for o in self.options)
        if self.kind == "flag":
            return "must be a bool"
        return ""

    def typed(self, v) -> bool:
        if self.kind in ("int", "pow2"):
            return _is_int(v)
        if self.kind == "flag":
            return isinstance(v, bool)
        return True

    def ok(self, v) -> bool:
        if not self.typed(v):
            return False
        if self.kind == "int":
            return self.lo <= v <= self.hi
        if self.kind == "pow2":
            return self.lo <= v <= self.hi and v & (v - 1) == 0
        if self.kind == "options":
            return v in self.options
        return True

    def check(self, name: str, v) -> None:
        """Launch-configuration style message: `name=value: rule`."""
        if not self.typed(v):
            raise ValueError(f"{name}: must be an int (got {v!r})")
        if not self.ok(v):
            raise ValueError(f"{name}={v!r}: {self.rule()}")


def knob(default, meta: Knob, **field_kw):
    """A dataclass field carrying its Knob metadata."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("knob defaults must be immutable")
    return dataclasses.field(default=default, metadata={"knob": meta}, **field_kw)


def knobs_of(cls) -> dict:
    """{field name: Knob} of a dataclass, in declaration order."""
    return {f.name: f.metadata["knob"] for f in dataclasses.fields(cls) if "knob" in f.metadata}
