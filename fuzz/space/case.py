"""The knob space: a Case is one point of it plus a data seed, and this module owns its validity rules.

Strategies (Hypothesis), the campaign's random source (fuzz.space.generate), the minimiser and JSON loading all go
through `Case.validate`, so a case that one of them accepts every other accepts too. Nothing here knows our
kernels: the launch configuration is the contract's type (contract.launch).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from moe_lora_fuzz.contract import DTYPES, LAYOUTS, Knob, MoeLoraConfig, interpreter_limit, knob, knobs_of
from moe_lora_fuzz.contract.quant import ACT_SCALES, QUANT_SCHEMES, SCALE_GROUPS, quantizes_activations

ROUTINGS = ("uniform", "distinct", "one_hot", "sparse")
SLOTTINGS = ("one_slot", "no_base", "random", "all_with_base", "all_base")


def _size(lo: int, hi: int, **kw) -> Knob:
    kw.setdefault("rule_text", f"must lie in [{lo}, {hi}]")
    return Knob.integer(lo, hi, **kw)


@dataclass(frozen=True)
class Case:
    """One point of the knob space. Every default is the simplest value of its knob (first option, smallest
    size, flag off): what minimising and Hypothesis shrinking move toward. Each field's metadata (contract.Knob)
    gives its valid range; validation derives from it."""

    seed: int = knob(0, Knob.integer(0, 2**63 - 1, rule_text="must lie in [0, 2**63)", opaque=True))
    dtype: str = knob(DTYPES[0], Knob.choice(DTYPES))
    m: int = knob(1, _size(0, 1 << 16))  # 0 is an edge, not a simplification
    top_k: int = knob(1, _size(1, 16))
    num_experts: int = knob(1, _size(1, 512))
    num_slots: int = knob(1, _size(1, 64))
    rank: int = knob(1, _size(1, 256))  # R: padded rank of the buffers
    # rows of A / columns of B beyond it are zero, as engines pad adapters
    real_rank: int = knob(1, _size(1, 256, rule_text="must lie in [1, rank]"))
    k_dim: int = knob(1, _size(1, 16384))
    n_dim: int = knob(1, _size(1, 16384))
    num_slices: int = knob(1, Knob.integer(1, 2, rule_text="must be 1 or 2"))
    layout: str = knob(LAYOUTS[0], Knob.choice(LAYOUTS))
    mul_routed_weight: bool = knob(False, Knob.flag())
    offset: int = knob(0, _size(0, 1024))
    extra_cols: int = knob(0, _size(0, 1024))
    routing: str = knob(ROUTINGS[0], Knob.choice(ROUTINGS))
    slotting: str = knob(SLOTTINGS[0], Knob.choice(SLOTTINGS))
    disabled: tuple = knob((), Knob("other"))  # slot ids with adapter_enabled = 0
    # inputs and outputs are padded views at unaligned addresses, not contiguous tensors
    strided: bool = knob(False, Knob.flag())
    # extra BLOCK_M blocks in the align buffers beyond P (our kernels' workspace)
    align_slack: int = knob(0, _size(0, 1024))
    # quantization (contract/quant.py); the knobs after `quant` sit at their defaults where they mean nothing
    # (quant none; block sizes without block scales; act_scale for w8a16), so one behaviour is one case
    quant: str = knob(QUANT_SCHEMES[0], Knob.choice(QUANT_SCHEMES))
    quant_group: str = knob(SCALE_GROUPS[0], Knob.choice(SCALE_GROUPS))
    quant_block_n: int = knob(16, Knob.pow2(16, 256))
    quant_block_k: int = knob(16, Knob.pow2(16, 256))
    act_scale: str = knob(ACT_SCALES[0], Knob.choice(ACT_SCALES))
    config: MoeLoraConfig = field(default_factory=MoeLoraConfig, metadata={"knob": Knob("other")})

    # ---- validity -------------------------------------------------------------------------------
    def validate(self, interpreter: bool = False, bf16_atomics: bool | None = None) -> "Case":
        """Raise ValueError naming the field and the rule; return self when valid. bf16_atomics: whether the
        interpreter adds bf16 atomically (None: ask fuzz.runtime.interpreter, which patches it where it can)."""

        def need(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"case.{name}: {rule} (got {getattr(self, name, None)!r})")

        for name, k in knobs_of(Case).items():
            v = getattr(self, name)
            if k.kind in ("int", "pow2"):
                need(type(v) is int, name, "must be an int")
            need(k.ok(v), name, k.rule())
        need(self.real_rank <= self.rank, "real_rank", "must lie in [1, rank]")
        need(
            self.routing != "distinct" or self.top_k <= self.num_experts,
            "routing",
            "'distinct' needs top_k <= num_experts",
        )
        need(
            isinstance(self.disabled, tuple)
            and all(type(d) is int and 0 <= d < self.num_slots for d in self.disabled)
            and len(set(self.disabled)) == len(self.disabled),
            "disabled",
            "must be distinct slot ids in [0, num_slots)",
        )
        if self != repair_quant(self):
            name = next(n for n in QUANT_KNOBS if getattr(self, n) != getattr(repair_quant(self), n))
            need(
                False,
                name,
                "must keep its default where the scheme does not use it (quant none, scales not "
                "in blocks, act_scale of w8a16)",
            )
        need(isinstance(self.config, MoeLoraConfig), "config", "must be a MoeLoraConfig")
        self.config.validate()
        if interpreter and bf16_atomics is None:
            from moe_lora_fuzz.fuzz.runtime.interpreter import bf16_atomics_ok

            bf16_atomics = bf16_atomics_ok()
        limit = interpreter_limit(self.dtype, self.config.expand.split_k, bf16_atomics) if interpreter else None
        if limit:
            raise ValueError(f"case.config: {limit} (cannot run under Triton's interpreter)")
        return self

    # ---- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["disabled"] = list(self.disabled)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        """Build and validate; every problem is a ValueError naming the field."""
        if not isinstance(d, dict):
            raise ValueError(f"case: expected an object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"case.{unknown[0]}: unknown field")
        missing = sorted(names - set(d))
        if missing:
            raise ValueError(f"case.{missing[0]}: missing")
        kw = dict(d)
        if not isinstance(kw["disabled"], list):
            raise ValueError("case.disabled: must be a list of slot ids")
        kw["disabled"] = tuple(kw["disabled"])
        kw["config"] = _config_from_dict(kw["config"])
        return cls(**kw).validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes) -> "Case":
        return dataclasses.replace(self, **changes)

    @property
    def coarse_class(self) -> str:
        """The part of a signature that comes from the case (DESIGN: dtype, layout, flags, split-K)."""
        quant = "" if self.quant == "none" else f"|q={self.quant}/{self.quant_group}/{self.act_scale}"
        return (
            f"{self.dtype}|{self.layout}|mrw={int(self.mul_routed_weight)}"
            f"|ssk={int(self.config.shrink.split_k > 1)}|esk={int(self.config.expand.split_k > 1)}"
        ) + quant


QUANT_KNOBS = ("quant_group", "quant_block_n", "quant_block_k", "act_scale")


def repair_quant(c: Case) -> Case:
    """The case with every quantization knob that its scheme does not use at its default (the minimiser's repair
    after one knob moved; validation requires it)."""
    d = {n: Case.__dataclass_fields__[n].default for n in QUANT_KNOBS}
    keep = {}
    if c.quant != "none":
        keep["quant_group"] = c.quant_group
        if c.quant_group == "block":
            keep["quant_block_n"], keep["quant_block_k"] = c.quant_block_n, c.quant_block_k
        if quantizes_activations(c.quant):
            keep["act_scale"] = c.act_scale
    want = {**d, **keep}
    if all(getattr(c, n) == v for n, v in want.items()):
        return c
    return c.replace(**want)


def repair(c: Case) -> Case:
    """Repair the cross-field rules after knobs moved one by one (a cut of rank also cuts real_rank; slots past
    num_slots are no longer disabled; `distinct` routing needs top_k <= num_experts; quantization knobs)."""
    return repair_quant(c).replace(
        real_rank=min(c.real_rank, c.rank),
        disabled=tuple(d for d in c.disabled if d < c.num_slots),
        routing=c.routing if (c.routing != "distinct" or c.top_k <= c.num_experts) else "uniform",
    )


def _config_from_dict(d) -> MoeLoraConfig:
    if not isinstance(d, dict):
        raise ValueError("case.config: expected an object")
    try:
        cfg = MoeLoraConfig.from_dict(d)
        cfg.validate()
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise ValueError(f"case.config{msg if msg.startswith(':') else '.' + msg}") from None
    return cfg
