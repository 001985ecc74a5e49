"""What an implementation declares it accepts, and how the case space follows it.

An implementation (the function named by --impl) may carry `capabilities`, a mapping with these keys (every
key optional; an implementation that declares nothing is fuzzed over the whole space):

    fp32_precision    "ieee" (default) | "tf32": the precision of its fp32 dots; the error bound follows it
    dtypes            subset of ("float32", "float16", "bfloat16")
    layouts           subset of ("per_token", "per_routed")
    mul_routed_weight subset of (False, True), or a bool meaning "only this value"
    strided_inputs    bool (default True): accepts padded views at element-aligned addresses
    contiguous_out    bool (default False): needs `out` to be one contiguous tensor
    alignment         bytes (power of two, default: the element size) that the bases and row strides of x,
                      lora_a, lora_b and out must be multiples of
    max_rank          int: the largest padded rank R it handles
    split_k           {"shrink": int, "expand": int}: the largest split-K per stage (1: no split-K)
    offset            bool (default True): honours a column offset into `out`
    quant             subset of contract.QUANT_SCHEMES (default ("none",)): the quantization schemes it takes;
                      it then receives `quant=` (a contract.QuantArgs) on quantized cases. Cases of an implementation
                      that declares none are never quantized; one that omits "none" only gets quantized cases.
    quant_groups      subset of contract.SCALE_GROUPS (default: all): the scale granularities it takes; or a dict
                      {scheme: subset} where they differ by scheme (a scheme left out takes all)
    act_scales        subset of contract.ACT_SCALES (default: all): static and/or dynamic activation scales

Campaigns draw inside the declared space (`project`); `--probe-contract` draws just outside it (`violate`)
and expects a clean refusal (ValueError / TypeError / NotImplementedError before anything is written).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from moe_lora_fuzz.contract import (
    ACT_SCALES,
    DTYPES,
    FP32_PRECISIONS,
    LAYOUTS,
    QUANT_SCHEMES,
    SCALE_GROUPS,
    TORCH_DTYPES,
)
from moe_lora_fuzz.fuzz.space.case import Case

KEYS = (
    "fp32_precision",
    "dtypes",
    "layouts",
    "mul_routed_weight",
    "strided_inputs",
    "contiguous_out",
    "alignment",
    "max_rank",
    "split_k",
    "offset",
    "quant",
    "quant_groups",
    "act_scales",
)
REFUSALS = (ValueError, TypeError, NotImplementedError)  # a clean refusal of an unsupported case


class CapabilityError(ValueError):
    """A malformed declaration (usage error: the message names the key and the rule)."""


def _groups(v, where: str) -> tuple:
    v = (v,) if isinstance(v, str) else v
    if not (isinstance(v, (list, tuple)) and v and all(x in SCALE_GROUPS for x in v)):
        raise CapabilityError(f"{where}: must be a non-empty subset of {list(SCALE_GROUPS)} (got {v!r})")
    return tuple(x for x in SCALE_GROUPS if x in v)


@dataclass(frozen=True)
class Capabilities:
    fp32_precision: str = "ieee"
    dtypes: tuple = DTYPES
    layouts: tuple = LAYOUTS
    mul_routed_weight: tuple = (False, True)
    strided_inputs: bool = True
    contiguous_out: bool = False
    alignment: int = 0  # 0: element alignment only
    max_rank: int | None = None
    split_k: tuple = (None, None)  # (shrink, expand) largest split-K; None: unlimited
    offset: bool = True
    quant: tuple = ("none",)
    quant_groups: tuple = SCALE_GROUPS  # or ((scheme, groups), ...) when declared per scheme
    act_scales: tuple = ACT_SCALES

    @property
    def declared(self) -> bool:
        return self != Capabilities()

    @classmethod
    def parse(cls, raw, where: str = "capabilities") -> "Capabilities":
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise CapabilityError(f"{where}: expected a dict, got {type(raw).__name__}")
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise CapabilityError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(KEYS)})")

        def subset(key, allowed):
            v = raw[key]
            v = (v,) if isinstance(v, (str, bool)) else v
            if not (isinstance(v, (list, tuple)) and v and all(x in allowed for x in v)):
                raise CapabilityError(f"{where}.{key}: must be a non-empty subset of {list(allowed)} (got {v!r})")
            return tuple(x for x in allowed if x in v)

        def flag(key):
            if not isinstance(raw[key], bool):
                raise CapabilityError(f"{where}.{key}: must be a bool (got {raw[key]!r})")
            return raw[key]

        kw = {}
        if "fp32_precision" in raw:
            if raw["fp32_precision"] not in FP32_PRECISIONS:
                raise CapabilityError(
                    f"{where}.fp32_precision: must be one of {FP32_PRECISIONS} (got {raw['fp32_precision']!r})"
                )
            kw["fp32_precision"] = raw["fp32_precision"]
        for key, allowed in (
            ("dtypes", DTYPES),
            ("layouts", LAYOUTS),
            ("mul_routed_weight", (False, True)),
            ("quant", QUANT_SCHEMES),
            ("act_scales", ACT_SCALES),
        ):
            if key in raw:
                kw[key] = subset(key, allowed)
        if isinstance(raw.get("quant_groups"), dict):
            per = raw["quant_groups"]
            bad = sorted(set(per) - set(QUANT_SCHEMES[1:]))
            if bad:
                raise CapabilityError(
                    f"{where}.quant_groups: {bad[0]!r} is not a quantization scheme {QUANT_SCHEMES[1:]}"
                )
            kw["quant_groups"] = tuple(
                (q, _groups(per[q], f"{where}.quant_groups.{q}")) for q in QUANT_SCHEMES[1:] if q in per
            )
        elif "quant_groups" in raw:
            kw["quant_groups"] = subset("quant_groups", SCALE_GROUPS)
        for key in ("strided_inputs", "contiguous_out", "offset"):
            if key in raw:
                kw[key] = flag(key)
        if "alignment" in raw:
            a = raw["alignment"]
            if not (type(a) is int and a >= 1 and a & (a - 1) == 0 and a <= 256):
                raise CapabilityError(f"{where}.alignment: must be a power of two in [1, 256] bytes (got {a!r})")
            kw["alignment"] = a
        if "max_rank" in raw:
            r = raw["max_rank"]
            if not (type(r) is int and r >= 1):
                raise CapabilityError(f"{where}.max_rank: must be an int >= 1 (got {r!r})")
            kw["max_rank"] = r
        if "split_k" in raw:
            sk = raw["split_k"]
            if not (
                isinstance(sk, dict)
                and set(sk) <= {"shrink", "expand"}
                and all(type(v) is int and v >= 1 for v in sk.values())
            ):
                raise CapabilityError(
                    f"{where}.split_k: must be a dict with optional int >= 1 values for 'shrink' "
                    f"and 'expand' (got {sk!r})"
                )
            kw["split_k"] = (sk.get("shrink"), sk.get("expand"))
        return cls(**kw)

    def _groups_per_scheme(self) -> dict | None:
        """quant_groups declared per scheme ({scheme: groups}), or None when one subset serves every scheme."""
        if self.quant_groups and isinstance(self.quant_groups[0], tuple):
            return dict(self.quant_groups)
        return None

    def groups_for(self, scheme: str) -> tuple:
        """The scale granularities declared for `scheme`."""
        per = self._groups_per_scheme()
        return self.quant_groups if per is None else per.get(scheme, SCALE_GROUPS)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if (per := self._groups_per_scheme()) is not None:
            d["quant_groups"] = {q: list(g) for q, g in per.items()}
        d["split_k"] = {"shrink": self.split_k[0], "expand": self.split_k[1]}
        return d

    # ---- the declared space ---------------------------------------------------------------------------
    def _elements(self, dtype: str) -> int:
        """Alignment in elements of `dtype` (1 when none is declared or it is finer than an element)."""
        size = TORCH_DTYPES[dtype].itemsize
        return max(1, self.alignment // size)

    def project(self, case: Case) -> Case:
        """The nearest case inside the declared space: a pure function of the case (shards stay partitions)."""
        pick = random.Random(case.seed ^ 0xCAB)
        c = case
        if c.dtype not in self.dtypes:
            c = c.replace(dtype=self.dtypes[pick.randrange(len(self.dtypes))])
        if c.layout not in self.layouts:
            c = c.replace(layout=self.layouts[0])
        if c.mul_routed_weight not in self.mul_routed_weight:
            c = c.replace(mul_routed_weight=self.mul_routed_weight[0])
        if c.strided and (not self.strided_inputs or self.contiguous_out or self.alignment):
            c = c.replace(strided=False)
        if not self.offset and (c.offset or c.extra_cols):
            c = c.replace(offset=0)
        a = self._elements(c.dtype)
        if a > 1:  # row strides of x (K), lora_a (K), lora_b (R), out (W) and the offset on multiples of a
            up = lambda v: -(-v // a) * a
            rank = up(c.rank)
            c = c.replace(
                k_dim=up(c.k_dim),
                n_dim=up(c.n_dim),
                rank=rank,
                offset=up(c.offset) if c.offset else 0,
                extra_cols=up(c.extra_cols) if c.extra_cols else 0,
            )
        if self.max_rank is not None and c.rank > self.max_rank:
            c = c.replace(rank=self.max_rank, real_rank=min(c.real_rank, self.max_rank))
        c = self._project_quant(c)
        cfg = c.config
        for stage, hi in zip(cfg.STAGES, self.split_k, strict=True):
            if hi is not None and getattr(cfg, stage).split_k > hi:
                cfg = cfg.with_knob(f"{stage}.split_k", hi)
        return c.replace(config=cfg)

    def _project_quant(self, c: Case) -> Case:
        """The quantization knobs inside the declared ones. Drawn from their own stream of the case's seed (never
        from the campaign's), so an implementation that declares nothing gets exactly the unquantized cases."""
        from moe_lora_fuzz.fuzz.space.case import repair_quant

        if self.quant == ("none",):
            return repair_quant(c.replace(quant="none"))
        inside = c.quant_group in self.groups_for(c.quant) and c.act_scale in self.act_scales
        if c.quant != "none" and c.quant in self.quant and inside:
            return c  # (idempotent: a fitted case stays as it is)
        # a declaring implementation gets quantized cases (the unquantized ones are the plain campaign's)
        pick = random.Random(c.seed ^ 0x9A47)
        schemes = [q for q in self.quant if q != "none"]
        scheme = c.quant if c.quant in schemes else schemes[pick.randrange(len(schemes))]
        groups = self.groups_for(scheme)
        return repair_quant(
            c.replace(
                quant=scheme,
                quant_group=groups[pick.randrange(len(groups))],
                quant_block_n=pick.choice((16, 32, 64)),
                quant_block_k=pick.choice((16, 32, 64)),
                act_scale=self.act_scales[pick.randrange(len(self.act_scales))],
            )
        )

    def violations(self, case: Case) -> list[tuple[str, Case]]:
        """Cases just outside the declared space, one broken promise each: (what is broken, case)."""
        out = []
        for d in DTYPES:
            if d not in self.dtypes:
                out.append((f"dtype {d}", case.replace(dtype=d)))
        for lay in LAYOUTS:
            if lay not in self.layouts:
                out.append((f"layout {lay}", case.replace(layout=lay)))
        for mrw in (False, True):
            if mrw not in self.mul_routed_weight:
                out.append((f"mul_routed_weight={mrw}", case.replace(mul_routed_weight=mrw)))
        if not self.strided_inputs or self.alignment or self.contiguous_out:
            out.append(("unaligned strided views", case.replace(strided=True)))
        if self._elements(case.dtype) > 1:
            out.append(("K not a multiple of the alignment", case.replace(k_dim=case.k_dim + 1)))
        if self.max_rank is not None:
            out.append((f"rank {self.max_rank + 1} > max_rank", case.replace(rank=self.max_rank + 1)))
        if not self.offset:
            out.append(("a column offset", case.replace(offset=1, extra_cols=max(case.extra_cols, 1))))
        if self.quant != ("none",):  # (only where quantization is declared: other probes draw as before)
            from moe_lora_fuzz.fuzz.space.case import repair_quant

            for q in ("fp8_w8a8", "int8_w8a8", "int8_w8a16"):
                if q not in self.quant:
                    out.append((f"quant {q}", repair_quant(case.replace(quant=q))))
        for stage, hi in zip(case.config.STAGES, self.split_k, strict=True):
            if hi is not None and hi < 64:
                out.append(
                    (
                        f"{stage} split_k {hi + 1}",
                        case.replace(config=case.config.with_knob(f"{stage}.split_k", hi + 1)),
                    )
                )
        return out

    def violate(self, case: Case) -> tuple[str, Case] | None:
        """One violation chosen by the case's seed (None when nothing is declared)."""
        options = self.violations(self.project(case))
        if not options:
            return None
        return options[random.Random(case.seed ^ 0x0B5).randrange(len(options))]
