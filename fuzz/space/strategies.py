"""Hypothesis strategies over the shared knob space (fuzz.space.generate).

Each choice maps to a Hypothesis primitive whose shrink target is the simplest value, so a failing
example shrinks toward small sizes, first options and flags off. Tensor data comes from a drawn seed
(Hypothesis does not manage torch's generator).
"""

from __future__ import annotations

from typing import Sequence

from hypothesis import strategies as st
from moe_lora_fuzz.fuzz.space.case import Case
from moe_lora_fuzz.fuzz.space.generate import CPU_SIZES, Sizes, generate


class HypothesisSource:
    def __init__(self, draw):
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))

    def choice(self, options: Sequence):
        return self.draw(st.sampled_from(list(options)))

    def flag(self) -> bool:
        return self.draw(st.booleans())


@st.composite
def cases(draw, sizes: Sizes = CPU_SIZES, interpreter: bool = True) -> Case:
    seed = draw(st.integers(0, 2**31 - 1))
    return generate(HypothesisSource(draw), sizes, interpreter=interpreter, seed=seed)
