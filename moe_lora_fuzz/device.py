"""use_device: choose where kernels run before anything imports triton.language.

Triton decides interpreter or compiler for every @triton.jit function (its own tl.cumsum too) when the
function is decorated, so "cpu" must set TRITON_INTERPRET=1 before the first import of triton.language. On a
machine without a GPU our kernels' import does that itself (kernels/runtime.py); on a GPU machine nothing
does, so this module imports nothing of Triton's and refuses, with the reason, a process where it is too late.
"""

from __future__ import annotations

import os
import sys


def use_device(device: str = "auto") -> str:
    """Resolve "auto" | "cpu" | "cuda" and prepare this process for it: "cpu" runs Triton kernels on Triton's
    interpreter (TRITON_INTERPRET=1, with bf16 and TF32 emulated as on a GPU where the installed triton allows:
    fuzz/runtime/interpreter.py). Call it before anything imports triton.language when you want the interpreter on a
    machine that has a GPU. Returns "cpu" or "cuda"; ValueError for anything else, or when triton.language was
    imported already with the interpreter off and "cpu" is asked."""
    from moe_lora_fuzz.contract import resolve_device

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device: expected auto, cpu or cuda (got {device!r})")
    device = resolve_device(device)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("device cuda: no CUDA device is available here")
    if device == "cpu":
        if _compiled_already():
            raise ValueError(
                "device cpu: triton.language was imported before TRITON_INTERPRET=1 was set, so Triton's own "
                "functions (tl.cumsum, ...) are compiled ones that cannot run on CPU tensors; set TRITON_INTERPRET=1 "
                "in the environment, or call use_device('cpu') before importing anything that imports triton"
            )
        os.environ["TRITON_INTERPRET"] = "1"
        from moe_lora_fuzz.fuzz.runtime.interpreter import install

        install()
    return device


def _compiled_already() -> bool:
    """triton.language is loaded and its @triton.jit functions were made for the compiler."""
    standard = getattr(sys.modules.get("triton.language"), "standard", None)
    fn = getattr(standard, "cumsum", None)
    return fn is not None and type(fn).__name__ != "InterpretedFunction"
