"""Time per call of our quantized fused MoE LoRA kernels against vLLM 0.34's `_fused_moe_lora_fp8` on the same shapes
and the same tensors (GPU). Also our unquantized bf16 kernels on those shapes, as a baseline.

    python scripts/bench_quant.py [--vllm-file PATH] [--m 1,16,128,1024,4096] [--out FILE.json]

The vLLM kernel file is read from --vllm-file, else from $MOE_LORA_FUZZ_CACHE/vllm-0.34.0/fused_moe_lora_fp8_op.py
(extract it from the wheel: `unzip -p vllm-0.34.0-*.whl vllm/lora/ops/triton_ops/fused_moe_lora_fp8_op.py`); without
it only our kernels are timed. Shapes (SPEC §5): K=2048, N=1536, E=128, top-k 8, R=16, L=4, two slices, bf16
activations; every token on a LoRA slot. A call that raises is reported with its error (vLLM 0.34's op does not
compile for w8a8 on our machines: its weight pointer is cast to the output's type), and each vLLM timing is
flagged with the oracle's verdict on the same case for M <= 128 (a fast wrong kernel is not a result).
Timings: triton.testing.do_bench (median of ~100 ms of calls after warm-up), per call, in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from moe_lora_fuzz.fuzz.data.tensors import materialize  # noqa: E402
from moe_lora_fuzz.fuzz.judgement.oracle import check  # noqa: E402
from moe_lora_fuzz.fuzz.space.case import Case  # noqa: E402
from moe_lora_fuzz.kernels import MoeLoraConfig, default_config, fused_moe_lora  # noqa: E402

SCHEMES = (
    ("fp8_w8a8", "block", "dynamic"),
    ("int8_w8a8", "channel", "dynamic"),
    ("int8_w8a16", "channel", "dynamic"),
)


def _case(m: int, quant: str, group: str, act: str) -> Case:
    c = Case(
        seed=7,
        dtype="bfloat16",
        m=m,
        top_k=8,
        num_experts=128,
        num_slots=4,
        rank=16,
        real_rank=16,
        k_dim=2048,
        n_dim=1536,
        num_slices=2,
        slotting="no_base",
        quant=quant,
        quant_group=group if quant != "none" else "tensor",
        quant_block_n=128 if group == "block" else 16,
        quant_block_k=128 if group == "block" else 16,
        act_scale=act if quant in ("fp8_w8a8", "int8_w8a8") else "dynamic",
    )
    cfg = default_config(m * 8, 16, 2048, 1536, 128, 4, 2)
    return c.replace(config=cfg).validate()


def _time(fn) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100) * 1000.0


def _vllm_file(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    cache = os.environ.get("MOE_LORA_FUZZ_CACHE")
    p = Path(cache) / "vllm-0.34.0" / "fused_moe_lora_fp8_op.py" if cache else None
    return p if p is not None and p.is_file() else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vllm-file", default=None)
    p.add_argument("--m", default="1,16,128,1024,4096")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    try:
        ms = [int(v) for v in a.m.split(",")]
    except ValueError:
        print(f"error: --m: expected comma-separated ints (got {a.m!r})", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("error: bench_quant.py times CUDA kernels: no GPU is visible", file=sys.stderr)
        return 2
    vfile = _vllm_file(a.vllm_file)
    if vfile is not None and not vfile.is_file():
        print(f"warning: --vllm-file {vfile} not found: timing our kernels only")
        vfile = None
    vllm = None
    if vfile is not None:
        from moe_lora_fuzz.fuzz.targets.impls import resolve

        vllm = resolve(f"vllm-fp8:{vfile}")
    print(f"device: {torch.cuda.get_device_name()}  vLLM file: {vfile or 'none (only ours)'}")
    rows = []
    for m in ms:
        base = _case(m, "none", "tensor", "dynamic")
        t = materialize(base, "cuda")
        kw = t.op_kwargs()
        row = {"m": m, "ours_bf16_us": round(_time(lambda kw=kw: fused_moe_lora(**kw)), 1)}
        for quant, group, act in SCHEMES:
            c = _case(m, quant, group, act)
            t = materialize(c, "cuda")
            kw = t.op_kwargs()
            key = f"{quant}/{group}"
            try:
                row[f"ours {key}"] = round(_time(lambda kw=kw: fused_moe_lora(**kw)), 1)
            except Exception as e:  # a failing call is a result too
                row[f"ours {key}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            if vllm is None:
                continue
            cfg = c.config if isinstance(c.config, MoeLoraConfig) else None
            try:
                # judged where the fp64 reference is quick (M <= 128): a verdict is about the code, not the size
                verdict = check(vllm.fit(c), vllm.name, "cuda", impl=vllm, diagnose=False).kind if m <= 128 else "-"
                call = _Call(kw, cfg, t)
                us = round(_time(lambda call=call: vllm.run(call)), 1)
                row[f"vllm {key}"] = us
                row[f"vllm {key} verdict"] = verdict
            except Exception as e:
                row[f"vllm {key}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        rows.append(row)
        print(json.dumps(row))
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


class _Call:
    """What an Impl's run() reads of a Tensors object: the op's keywords and the case (for its config)."""

    def __init__(self, kw: dict, cfg, t):
        self._kw, self.case = kw, t.case

    def op_kwargs(self) -> dict:
        return self._kw


if __name__ == "__main__":
    sys.exit(main())
