"""The interpreter patch (fuzz/runtime/interpreter.py): bf16 dots, bf16 atomic adds, TF32 emulation, checked against
torch on foreign kernels (tests/foreign_kernels.py) and on our own kernels with their bf16 upcast off.

Every behaviour is also measured once on an unpatched interpreter (a subprocess), and each test asserts that
the unpatched result is wrong there: the patch is what makes these tests pass.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from moe_lora_fuzz.fuzz.judgement.oracle import check
from moe_lora_fuzz.fuzz.runtime import interpreter

from tests import foreign_kernels as fk
from tests.cases import BASE, _tiles

pytestmark = pytest.mark.interpreter
ROOT = Path(__file__).resolve().parent.parent
U32 = 2.0**-24

BF16_CASE = BASE.replace(dtype="bfloat16")
FP32_CASE = BASE.replace(dtype="float32", m=3)
BF16_EXPAND_SPLITK = BASE.replace(dtype="bfloat16", rank=40, real_rank=40, config=_tiles(expand_split_k=2))


def _bf16_operands():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 32, generator=g).bfloat16(), torch.randn(32, 16, generator=g).bfloat16()


def _bf16_vectors():
    g = torch.Generator().manual_seed(3)
    return torch.randn(16, generator=g).bfloat16(), torch.randn(16, generator=g).bfloat16()


def _atomic_operands():
    """20 values into 5 slots (repeats), a NaN past n that the mask must keep out, a 6th slot never indexed."""
    g = torch.Generator().manual_seed(1)
    val = torch.cat([torch.randn(20, generator=g), torch.tensor([float("nan")] * 12)]).bfloat16()
    idx = torch.cat([torch.randint(0, 5, (20,), generator=g), torch.zeros(12, dtype=torch.int64)]).int()
    return torch.full((6,), 0.5).bfloat16(), val, idx, 20


def _tf32_operands():
    """a = t + d: t has 6 significant bits, 0 < d < 2^-12 |t| pushes a off TF32 but any TF32 rounding of a
    gives t back; with K = 16 every product and partial sum of the t's is exact in fp32."""
    g = torch.Generator().manual_seed(2)

    def one(shape):
        t = torch.randint(32, 64, shape, generator=g).float() / 32
        d = t * torch.rand(shape, generator=g) * 2.0**-12 + t * 2.0**-20
        sign = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
        return (sign * (t + d)).float(), sign * t

    (a, ta), (b, tb) = one((16, 16)), one((16, 16))
    return a, b, ta, tb


# What an unpatched interpreter does with each of the above: measured once, in a fresh process.
UNPATCHED_PROBE = """
import json, os, sys
sys.path.insert(0, os.getcwd())
import torch
import moe_lora_fuzz.kernels.moe_lora as ml
from moe_lora_fuzz.fuzz.runtime import interpreter
from moe_lora_fuzz.fuzz.judgement.oracle import check
from tests import foreign_kernels as fk
from tests import test_interpreter as ti
assert not interpreter.PATCHED
import triton.runtime.interpreter as raw
interpreter._numpy_scalars(raw)  # only the numpy compatibility (triton 3.6 + numpy >= 2.4 runs no kernel without)
r = {}
a, b = ti._bf16_operands()
r["dot_err"] = float((fk.matmul(a, b) - a.float() @ b.float()).abs().max())
out, val, idx, n = ti._atomic_operands()
try:
    fk.atomic_add(out, val, idx, n)
    r["atomic"] = "ran"
except Exception as e:
    r["atomic"] = f"{type(e).__name__}: {e}"
try:
    got, want = fk.bf16_ops(*ti._bf16_vectors())
    r["ops_wrong_rows"] = int((got.view(torch.int16) != want.view(torch.int16)).any(dim=1).sum())
except Exception as e:  # triton 3.6 has no bf16 scalar constants at all (InterpreterBuilder.get_bf16)
    r["ops_wrong_rows"] = f"{type(e).__name__}: {e}"
a, b, ta, tb = ti._tf32_operands()
r["tf32_equals_ieee"] = bool(torch.equal(fk.matmul(a, b, "tf32"), fk.matmul(a, b, "ieee")))
r["default_equals_ieee"] = bool(torch.equal(fk.matmul(a, b), fk.matmul(a, b, "ieee")))
r["foreign_bf16"] = check(ti.BF16_CASE, "tests/foreign_kernels.py:pairwise_moe_lora", "cpu").kind
r["tf32_mutant"] = check(ti.FP32_CASE, "mutant:fp32-silent-tf32", "cpu").kind
ml.interpreter_bf16_ok = lambda: True  # our kernels with their bf16 upcast switched off
r["ours_bf16"] = check(ti.BF16_CASE, "ours", "cpu").kind
print("RESULT " + json.dumps(r))
"""


@pytest.fixture(scope="module")
def unpatched() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", UNPATCHED_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT ") :])


def test_installed_idempotent_and_reported():
    assert os.environ.get("TRITON_INTERPRET") == "1"  # conftest installed the patch for --device cpu
    first = interpreter.install()
    assert interpreter.install() is first
    assert {"dot", "tf32", "atomic_add", "bf16 arithmetic", "bf16 casts", "bf16 reductions", "wild access"} <= first
    assert interpreter.bf16_atomics_ok() and interpreter.tf32_emulated()
    with pytest.raises(ValueError, match="tf32_rounding"):
        interpreter.install(tf32_rounding="rne")  # one process, one TF32 rounding
    with pytest.raises(ValueError, match="tf32_rounding: 'nearest'"):
        interpreter.install(tf32_rounding="nearest")


def test_other_internals_leave_it_unpatched(monkeypatch):
    import triton
    import triton.language.core as core
    import triton.runtime.interpreter as interp
    from triton._C.libtriton import ir

    assert interpreter._check_internals(interp, ir, core) is None
    monkeypatch.setattr(interp.InterpreterBuilder, "create_dot", lambda self, a, b, d: None)
    assert "create_dot" in interpreter._check_internals(interp, ir, core)
    monkeypatch.setattr(triton, "__version__", "9.9.9")
    assert "not a tested version" in interpreter._check_internals(interp, ir, core)


def test_rounding_helpers_are_exact():
    x = np.array(
        [1 + 2.0**-11 + 2.0**-23, 1 + 2.0**-11, 1 + 3 * 2.0**-11, -(1 + 2.0**-10 - 2.0**-23)], dtype=np.float32
    )
    assert interpreter.round_to_tf32(x, "truncate").tolist() == [1, 1, 1 + 2.0**-10, -1]
    assert interpreter.round_to_tf32(x, "rne").tolist() == [1 + 2.0**-10, 1, 1 + 2.0**-9, -(1 + 2.0**-10)]
    ties = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8 + 2.0**-20), np.inf, np.nan], dtype=np.float32)
    got = interpreter.bf16_bits_to_f32(interpreter.f32_to_bf16_bits(ties))
    assert got[:4].tolist() == [1, 1 + 2.0**-6, -(1 + 2.0**-7), np.inf] and np.isnan(got[4])
    # fp64 -> bf16 rounds once: via fp32 (a tie there) it would round down to 1
    once = interpreter.to_bf16_bits(np.array([1 + 2.0**-8 + 2.0**-30]))
    assert interpreter.bf16_bits_to_f32(once)[0] == 1 + 2.0**-7


def test_bf16_dot_is_an_fp32_product(unpatched):
    a, b = _bf16_operands()
    got = fk.matmul(a, b)
    ref = a.float() @ b.float()  # bf16 products are exact in fp32: only the fp32 sums round
    bound = 2 * a.shape[1] * U32 * (a.float().abs() @ b.float().abs())
    assert ((got - ref).abs() <= bound).all(), float(((got - ref).abs() / bound).max())
    assert unpatched["dot_err"] > 1e3  # the unpatched interpreter multiplies raw bit patterns


def test_bf16_atomic_add_sums_lane_by_lane(unpatched):
    out, val, idx, n = _atomic_operands()
    expected = out.clone()
    for i in range(n):  # one bf16 rounding per add, in lane order (programs run one after another)
        expected[idx[i]] = (expected[idx[i]].float() + val[i].float()).bfloat16()
    fk.atomic_add(out, val, idx, n)
    assert torch.equal(out.view(torch.int16), expected.view(torch.int16))  # incl. masked lanes and slot 5
    assert "Unsupported data type" in unpatched["atomic"]


def test_bf16_elementwise_casts_reductions_round_once(unpatched):
    got, want = fk.bf16_ops(*_bf16_vectors())
    assert torch.equal(got.view(torch.int16), want.view(torch.int16)), (got != want).nonzero().tolist()
    wrong = unpatched["ops_wrong_rows"]  # raw-bit arithmetic gets most of the 10 rows wrong (3.6: it raises)
    assert "get_bf16" in wrong if isinstance(wrong, str) else wrong >= 8


def test_tf32_dot_emulated_and_ieee_exact(unpatched, monkeypatch):
    a, b, ta, tb = _tf32_operands()
    exact_tf32 = ta @ tb  # exact: see _tf32_operands
    assert torch.equal(fk.matmul(a, b), exact_tf32)  # Triton's default precision for fp32 is tf32
    assert torch.equal(fk.matmul(a, b, "tf32"), exact_tf32)
    ref = a.double() @ b.double()
    fp32_bound = a.shape[1] * U32 * (a.double().abs() @ b.double().abs())
    ieee = fk.matmul(a, b, "ieee")
    assert ((ieee.double() - ref).abs() <= fp32_bound).all()
    assert ((exact_tf32.double() - ref).abs() > 4 * fp32_bound).any()  # TF32 is visibly not fp32 here
    x3 = fk.matmul(a, b, "tf32x3")  # three TF32 passes: close to fp32, far better than one pass
    assert ((x3.double() - ref).abs() <= 4 * fp32_bound).all()
    monkeypatch.setenv("TRITON_F32_DEFAULT", "ieee")  # Triton's own switch for the default is honoured
    assert torch.equal(fk.matmul(a, b), ieee)
    assert unpatched["tf32_equals_ieee"] and unpatched["default_equals_ieee"]


@pytest.mark.parametrize(
    "case", [pytest.param(BF16_CASE, id="bf16"), pytest.param(BF16_EXPAND_SPLITK, id="bf16-expand-splitk-2")]
)
def test_our_kernels_run_bf16_uncast(case, unpatched):
    import moe_lora_fuzz.kernels.moe_lora as ml

    assert ml.interpreter_bf16_ok()  # so UPCAST is off and expand split-K > 1 is accepted in bf16
    verdict = check(case, "ours", "cpu")
    assert verdict.kind == "pass", verdict.message
    assert unpatched["ours_bf16"] != "pass"  # uncast on an unpatched interpreter: wrong


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(BF16_CASE, id="bf16"),
        pytest.param(
            BASE.replace(dtype="float32", layout="per_routed", mul_routed_weight=True), id="fp32-per-routed-mrw"
        ),
    ],
)
def test_foreign_implementation_passes(case, unpatched):
    verdict = check(case, "tests/foreign_kernels.py:pairwise_moe_lora", "cpu")
    assert verdict.kind == "pass", verdict.message
    assert unpatched["foreign_bf16"] != "pass"  # bf16 dots and atomics of a foreign kernel, unpatched


def test_silent_tf32_mutant_is_visible_on_cpu(unpatched):
    assert check(FP32_CASE, "mutant:fp32-silent-tf32", "cpu").kind == "mismatch"
    assert check(FP32_CASE, "ours", "cpu").kind == "pass"
    assert unpatched["tf32_mutant"] == "pass"  # invisible on an unpatched interpreter


# ---- wild accesses --------------------------------------------------------------------------------------
FAR = 1 << 40  # elements past the source: terabytes away, never mapped
WILD_PROBE = (
    """
import os, sys
sys.path.insert(0, os.getcwd())
import torch
from tests import foreign_kernels as fk
fk.gather(torch.ones(8), torch.tensor([0, 1, %d, 3] + [0] * 12), 4)
print("survived")
"""
    % FAR
)


def test_a_wild_read_raises_instead_of_killing_the_process():
    src, idx = torch.arange(8.0), torch.tensor([0, 1, 7, 3] + [FAR] * 12)  # the far lanes are masked off
    assert fk.gather(src, idx, 4)[:4].tolist() == [0.0, 1.0, 7.0, 3.0]
    with pytest.raises(Exception) as info:
        fk.gather(src, torch.tensor([0, 1, FAR, 3] + [0] * 12), 4)
    wild = interpreter.wild_access_in(info.value)
    assert wild is not None and wild.op == "read", info.value
    assert "gather_kernel reads 1 of 16 lanes" in str(wild) and "outside every tensor argument" in str(wild)
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", WILD_PROBE], cwd=ROOT, env=env, capture_output=True, timeout=300)
    assert proc.returncode == -11 and b"survived" not in proc.stdout  # unpatched: the whole process dies


def _wild_row_impl(**kw):
    """Adds x's first element read through a wild row index: an out-of-bounds read far past every buffer."""
    kw["out"][0, 0, 0] += fk.gather(kw["x"].reshape(-1), torch.tensor([FAR] + [0] * 15), 1)[0]


def test_a_wild_read_is_an_oob_read_verdict(device):
    v = check(BASE, "wild", device, impl=lambda t: _wild_row_impl(**t.op_kwargs()))
    assert v.kind == "oob-read" and "unmapped" in v.message, v
    assert v.family == "wrong-output"  # triage groups it with the wrong values the same bug gives nearer by


def test_numpy_scalars_patch_reads_the_one_element():
    """triton 3.6's interpreter turned a scalar into an index with int(array), which numpy >= 2.4 refuses for a
    1-element 1-D array: every range(0, tl.cdiv(...)) raised (80 false findings). The patch reads the element."""

    class Scope:
        def __init__(self):
            self.attrs = {}

        def set_attr(self, obj, name, value):
            self.attrs[name] = value

    class FakeInterp:
        @staticmethod
        def _patch_lang_tensor(tensor, scope):
            scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data))  # what triton 3.6 does

    class Handle:
        data = np.array([7], dtype=np.int32)

    class Tensor:
        handle = Handle()

    assert interpreter._numpy_scalars(FakeInterp)
    scope = Scope()
    FakeInterp._patch_lang_tensor(object, scope)
    assert scope.attrs["__index__"](Tensor()) == 7
    Handle.data = np.array([1, 2])
    with pytest.raises(TypeError, match="only a scalar"):
        scope.attrs["__index__"](Tensor())
    assert "numpy scalars" in interpreter.PATCHED  # installed here too (a no-op on triton 3.9)
