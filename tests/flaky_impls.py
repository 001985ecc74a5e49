"""Implementations for the classification and masking checks of triage (tests/test_classes.py, docs/reports.md).

    moe-lora-fuzz run --impl tests/flaky_impls.py:one_in_five --device cpu --budget 60      # 1 intermittent cause
    moe-lora-fuzz run --impl tests/flaky_impls.py:masking_bugs --device cpu --budget 120    # 2 bug causes

one_in_five   correct (tests/example_impl.py:torch_moe_lora), except that about one call in five adds 1.0 to
              one element of the output it touches: the same case fails on some runs only
masking_bugs  two independent bugs: a delta scaled by 1.5 whenever top_k > 1 (most drawn cases: the bug that
              hides the other) and, with two slices, the second slice's shrink reading the first slice's lora_a
"""

from __future__ import annotations

import random

from tests.example_impl import torch_moe_lora

_NOISE = random.Random()  # not seeded: the same case must fail on some runs and pass on others


def one_in_five(**kw) -> None:
    torch_moe_lora(**kw)
    out, topk_ids = kw["out"], kw["topk_ids"]
    if topk_ids.numel() and _NOISE.random() < 0.2:
        m = _NOISE.randrange(out.shape[0])
        j = _NOISE.randrange(out.shape[1])
        col = kw["offset"] + _NOISE.randrange(len(kw["lora_b"]) * kw["lora_b"][0].shape[2])
        out[m, j, col] += 1.0


def masking_bugs(**kw) -> None:
    out = kw["out"]
    before = out.clone()
    lora_a = kw["lora_a"]
    torch_moe_lora(**dict(kw, lora_a=[lora_a[0]] * len(lora_a)))  # bug 2: needs num_slices = 2
    if kw["topk_ids"].shape[1] > 1:  # bug 1: needs top_k > 1
        out.copy_(before + (out - before) * 1.5)
