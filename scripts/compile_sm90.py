"""Compile our matmul kernel for an H100 (sm90) on a machine without a GPU: Triton's code generator and ptxas run on
the CPU, so a kernel that the interpreter runs but the compiler rejects is caught before any GPU time is spent.

    python scripts/compile_sm90.py [--dump DIR] [--unquantized]

Each fused call of a small case per scheme (unquantized bf16 and fp16, every quantized scheme x scale group x
activation scale) runs on CPU tensors with the matmul kernel replaced by a recorder; every distinct launch it
recorded is then compiled with the argument types and compile-time values it was given (integers equal to 1
specialised as Triton does; alignment hints left out). --dump DIR writes each variant's PTX without debug lines (to
diff two checkouts: the unquantized PTX should not change when only quantized code does). Exit 1 if one fails.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"  # the real compiler; CPU tensors are let through below
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

TYPES = {
    torch.bfloat16: "bf16",
    torch.float16: "fp16",
    torch.float32: "fp32",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "i1",
    torch.float8_e4m3fn: "fp8e4nv",
}
CASES = [  # (dtype, quant, group, act)
    ("bfloat16", "none", "tensor", "dynamic"),
    ("float16", "none", "tensor", "dynamic"),
    *[
        ("bfloat16", q, g, a)
        for q in ("fp8_w8a8", "int8_w8a8", "int8_w8a16")
        for g in ("tensor", "channel", "block")
        for a in (("dynamic", "static") if q != "int8_w8a16" else ("dynamic",))
    ],
]


def _record(calls: list):
    class Recorder:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((args, kwargs))

    return Recorder()


def _signature(kernel, args: tuple, kwargs: dict) -> tuple[dict, dict, dict]:
    bound = dict(zip(kernel.arg_names, args, strict=False)) | kwargs
    sig, consts, options = {}, {}, {}
    for p in kernel.params:
        v = bound.get(p.name, p.default)
        if p.is_constexpr or v is None or isinstance(v, (bool, str)):
            sig[p.name], consts[p.name] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            sig[p.name] = "*" + TYPES[v.dtype]
        elif v == 1 and p.name not in (kernel.do_not_specialize or ()):
            sig[p.name], consts[p.name] = "constexpr", 1
        else:
            sig[p.name] = "i64" if abs(v) >= 2**31 else "i32"
    for name in ("num_warps", "num_stages"):
        options[name] = kwargs[name]
    return sig, consts, options


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dump", default=None)
    p.add_argument("--unquantized", action="store_true", help="only the unquantized cases (any checkout has them)")
    a = p.parse_args()
    import triton
    from moe_lora_fuzz.fuzz.data.tensors import materialize
    from moe_lora_fuzz.fuzz.space.case import Case
    from moe_lora_fuzz.kernels import fused_moe_lora
    from moe_lora_fuzz.kernels import moe_lora as host
    from moe_lora_fuzz.kernels import moe_lora_quant as quant_host
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    kernel = host.moe_lora_matmul_kernel
    host.INTERPRET = True  # let CPU tensors through the wrapper's check; no kernel runs
    host.interpreter_bf16_ok = quant_host.interpreter_bf16_ok = lambda: True  # the launch a GPU gets
    calls: list = []
    host.moe_lora_matmul_kernel = _record(calls)
    for dtype, quant, group, act in CASES[:2] if a.unquantized else CASES:
        c = Case(seed=1, dtype=dtype, m=5, top_k=2, num_experts=4, num_slots=2, rank=16, real_rank=16, k_dim=256)
        c = c.replace(n_dim=64, num_slices=2, quant=quant, quant_group=group, act_scale=act)
        c = c.replace(quant_block_n=32 if group == "block" else 16, quant_block_k=64 if group == "block" else 16)
        kw = materialize(c.validate(), "cpu").op_kwargs()
        fused_moe_lora(**kw)
    seen, failed = {}, 0
    for args, kwargs in calls:
        sig, consts, options = _signature(kernel, args, kwargs)
        key = (
            tuple(sorted(sig.items())),
            tuple(sorted((k, str(v)) for k, v in consts.items())),
            tuple(options.items()),
        )
        if key in seen:
            continue
        name = (
            f"QUANT={consts.get('QUANT', 0)} SLICES_IN_N={consts['SLICES_IN_N']} x={sig['x_ptr']} out={sig['out_ptr']} "
        )
        name += " ".join(k for k in ("ACT_STATIC", "ACT_TILE_GROUP", "ROUND_X", "NARROW_K") if consts.get(k))
        try:
            cc = triton.compile(ASTSource(kernel, sig, consts), target=GPUTarget("cuda", 90, 32), options=options)
            seen[key] = cc
            print(f"ok    {name}")
        except Exception as e:  # a compile error is what this script is for: report and go on
            seen[key] = None
            failed += 1
            print(f"FAIL  {name}: {str(e).strip().splitlines()[-1][:300]}")
            continue
        if a.dump:
            out = Path(a.dump)
            out.mkdir(parents=True, exist_ok=True)
            ptx = "\n".join(ln for ln in cc.asm["ptx"].splitlines() if not re.match(r"\s*(\.loc|\.file|//)", ln))
            (out / (re.sub(r"[^A-Za-z0-9=_*]+", "_", name).strip("_") + ".ptx")).write_text(ptx.split(".section")[0])
    print(f"{len(seen)} variants compiled for sm90, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
