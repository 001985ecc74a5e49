"""The environment self-check: before a campaign believes any finding (at its first failing verdict), our own
kernels and the references must agree on a few known cases, run through the same path as the campaign's cases
(the same worker process, so the same device, interpreter and its patches, torch, triton and numpy).

A failure here is the environment's, not the implementation's: e.g. triton 3.6's interpreter with numpy >= 2.4
raised inside our own `_launch` and `align_triton` on every case (80 false findings in a 30 s campaign). The
campaign then stops with one `error:` line naming the versions (exit 2), and nothing is reported against the
implementation under test.

Cases: tiny, one per dtype (bf16 and fp32 exercise the interpreter patches on CPU), both align paths, split-K
on both stages, a disabled adapter and base tokens: each case costs about 0.25 s on the interpreter.
"""

from __future__ import annotations

from moe_lora_fuzz.contract import MoeLoraConfig, TileConfig
from moe_lora_fuzz.fuzz.space.case import Case


class EnvironmentBroken(RuntimeError):
    """Our own kernels or the references fail a known case here: findings would be the environment's."""


def _tiles(block_m: int = 16, align: str = "auto", shrink_split_k: int = 1, expand_split_k: int = 1) -> MoeLoraConfig:
    return MoeLoraConfig(
        block_m=block_m,
        shrink=TileConfig(block_n=16, block_k=16, split_k=shrink_split_k),
        expand=TileConfig(block_n=16, block_k=16, split_k=expand_split_k),
        align=align,
    )


_BASE = Case(
    seed=1,
    dtype="float16",
    m=7,
    top_k=2,
    num_experts=4,
    num_slots=2,
    rank=8,
    real_rank=8,
    k_dim=40,
    n_dim=24,
    num_slices=2,
    layout="per_token",
    offset=2,
    extra_cols=1,
    routing="uniform",
    slotting="random",
    config=_tiles(align="triton"),
)

# (what it checks, the case): every one passes with our kernels on a working CPU interpreter and GPU
CASES = (
    ("fp16, triton align", _BASE),
    (
        "fp32, per-routed layout, routed weight, torch align",
        _BASE.replace(
            seed=2, dtype="float32", layout="per_routed", mul_routed_weight=True, config=_tiles(align="torch")
        ),
    ),
    (
        "bf16, shrink split-K 2, disabled adapter",
        _BASE.replace(
            seed=3, dtype="bfloat16", k_dim=72, disabled=(1,), slotting="no_base", config=_tiles(shrink_split_k=2)
        ),
    ),
    (  # bf16 atomics into `out`: the interpreter test that failed on triton 3.6 + numpy 2.5 + torch 2.11 (docs)
        "bf16, expand split-K 2",
        _BASE.replace(seed=4, dtype="bfloat16", rank=40, real_rank=40, config=_tiles(expand_split_k=2)),
    ),
)


def versions() -> str:
    """The versions a self-check failure is blamed on, one phrase."""
    import platform

    import numpy
    import torch
    import triton

    return (
        f"python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}, "
        f"numpy {numpy.__version__}"
    )


def run_here(device: str) -> str | None:
    """Run the known cases in this process with our kernels; None when all pass, else what failed (one line).
    Called inside the campaign's worker, so it takes exactly the campaign's path."""
    from moe_lora_fuzz.fuzz.judgement.oracle import check
    from moe_lora_fuzz.fuzz.runtime.interpreter import NOT_PATCHED_REASON
    from moe_lora_fuzz.fuzz.targets.impls import resolve

    ours = resolve("ours")
    for what, case in CASES:
        try:
            case = case.validate(interpreter=device == "cpu")
        except ValueError:
            continue  # a case this device cannot run (e.g. bf16 split-K without the interpreter patch)
        try:
            v = check(case, "ours", device, impl=ours, permutation=False, diagnose=False)
        except Exception as e:  # the harness itself cannot run here (e.g. no allocator for the device)
            text = str(e).strip().splitlines()
            return f"the harness raised on a known case ({what}): {type(e).__name__}: {text[0][:300] if text else ''}"
        if v.failed:
            first = (v.message or "").strip().splitlines()
            why = f"{v.kind}: {first[0][:300] if first else ''}"
            unpatched = f"; interpreter {NOT_PATCHED_REASON}" if NOT_PATCHED_REASON else ""
            return f"our own kernels fail a known case ({what}) with {why}{unpatched}"
    return None


def message(device: str, failure: str) -> str:
    return (
        f"environment self-check failed on --device {device} ({versions()}): {failure.rstrip('.')}. Findings "
        "here would be the environment's, not the implementation's; use a supported version (docs/reliability.md)"
    )
