"""Fewer host reads per case (issue 29): the integer inputs the data features read reach the host in one copy."""

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
