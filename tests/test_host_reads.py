"""Fewer host reads per case (issue 29): the integer inputs the data features read reach the host in one copy."""

from collections import Counter

import torch
from moe_lora_fuzz.fuzz.data.tensors import materialize, packed_copy

from tests.cases import BASE

INTS = ("topk_ids", "token_lora", "adapter_enabled")


def test_packed_copy_gives_each_view_its_values_and_shape():
    case = BASE.replace(strided=True)  # padded rows: topk_ids is not contiguous
    t = materialize(case, "cpu")
    views = [t.topk_ids, t.token_lora, t.adapter_enabled]
    assert not t.topk_ids.is_contiguous()
    for got, want in zip(packed_copy(views), views, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype and torch.equal(got, want)


def test_prefetched_host_inputs_equal_one_copy_each(device):
    """On a GPU, a device-built case's three integer inputs come back in one transfer, equal to separate copies;
    on a CPU prefetch leaves the copies to __getitem__ (no transfer to save)."""
    case = BASE.replace(strided=True, m=33)
    t = materialize(case, device, where="device")
    t.host.prefetch(INTS)
    separate = materialize(case, device, where="device").host
    for name in INTS:
        assert torch.equal(t.host[name], separate[name]) and t.host[name].device.type == "cpu", name


def test_fingerprint_sees_replacements_not_additions(monkeypatch):
    """The per-case fingerprint (fuzz.runtime.sandbox), now built by C-level iteration: a replaced torch function or
    Tensor method is a change, an added attribute (a lazy import) is not, nor a module's dunder names."""
    import moe_lora_fuzz.fuzz.judgement.oracle as oracle_module
    from moe_lora_fuzz.fuzz.runtime import sandbox

    base = sandbox.fingerprint()
    assert sandbox.changed(base, sandbox.fingerprint()) is None
    monkeypatch.setattr(torch, "matmul", lambda *a: None)
    assert "torch.matmul" in sandbox.changed(base, sandbox.fingerprint())
    monkeypatch.undo()
    monkeypatch.setattr(torch.Tensor, "__add__", lambda self, other: None)
    assert "torch.Tensor.__add__" in sandbox.changed(base, sandbox.fingerprint())
    monkeypatch.undo()
    monkeypatch.setattr(oracle_module, "lazily_added", 1, raising=False)
    monkeypatch.setattr(oracle_module, "__warningregistry__", {}, raising=False)
    assert sandbox.changed(base, sandbox.fingerprint()) is None
    monkeypatch.setattr(oracle_module, "check", lambda *a: None)
    assert "check" in sandbox.changed(base, sandbox.fingerprint())


def _ops(fn) -> Counter:
    """aten operations (views apart) and host reads (_local_scalar_dense: item, bool, int, float) while fn runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            seen["reads" if name == "_local_scalar_dense" else "views" if func.is_view else "ops"] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return seen


def test_the_fp64_reference_costs_the_same_few_operations_at_any_size(monkeypatch):
    """The GPU path's host cost: a fixed number of operations whatever the tokens, experts and slots (no Python
    loop over them), and no host read. Sizes below one chunk, as every nightly case is on a GPU."""
    from moe_lora_fuzz.reference import fp64, moe_lora_fp64

    monkeypatch.setattr(fp64, "CHUNK_ELEMENTS", fp64.CUDA_CHUNK_ELEMENTS)
    counts = []
    for m, experts, slots in ((40, 4, 2), (300, 8, 4)):  # tile 8 and 64
        case = BASE.replace(m=m, num_experts=experts, num_slots=slots, mul_routed_weight=True)
        args = materialize(case, "cpu").op()
        counts.append(_ops(lambda args=args: moe_lora_fp64(args)))
    assert counts[0] == counts[1], counts
    assert counts[0]["reads"] == 0 and counts[0]["ops"] <= 80, counts[
        0
    ]  # was ~25 per 32 MiB chunk: 441 per nightly case


def test_materialise_reads_nothing_back_and_judging_reads_once():
    from moe_lora_fuzz.fuzz.judgement import compare

    case = BASE.replace(m=60, mul_routed_weight=True)
    built = _ops(lambda: materialize(case, "cpu"))
    assert built["reads"] == 0, built
    run = compare._prepare(case, "cpu", compare.Fill())
    exp, _ = compare._expect(case, run, naive=False)
    compare._call(run, compare.Impl("torch", _torch_impl(), takes_config=False, ours=False))
    judged = _ops(lambda: compare._judge(case, run, exp))
    assert judged["reads"] == 0 and judged["ops"] <= 40, judged  # one tolist (not an aten read) for every flag


def _torch_impl():
    from tests.example_impl import torch_moe_lora

    return lambda t: torch_moe_lora(**t.op_kwargs())
