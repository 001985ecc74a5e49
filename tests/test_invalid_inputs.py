"""Invalid calls of kernels.fused_moe_lora: each must raise ValueError/TypeError naming the bad argument.

Every test starts from one small valid call (`_valid_call`) and changes exactly one thing, so a test that
passes proves the check it names fired, not some unrelated one. `test_valid_baseline_changes_out` makes
sure the baseline itself is accepted and does real work (otherwise every test below would be vacuous).
"""

from __future__ import annotations

import pytest
import torch
from moe_lora_fuzz.contract import OpArgs
from moe_lora_fuzz.kernels import MoeLoraConfig, TileConfig, Workspace, alloc_align, fused_moe_lora, padded_length
from moe_lora_fuzz.reference import moe_lora_fp64

from moe_lora_fuzz import kernels

M, K_TOP, E, L, R, K, N, S = 5, 2, 3, 2, 4, 20, 8, 2
DTYPE = torch.float16
BLOCK_M = 16  # MoeLoraConfig() default; workspace tests pass that config explicitly


def _valid_call(device: str, dtype: torch.dtype = DTYPE, m: int = M) -> dict:
    """Keyword arguments of one valid fused_moe_lora call (per-token layout, two slices, offset 0)."""
    g = torch.Generator().manual_seed(1234)

    def rnd(*shape):
        return (0.25 * torch.randn(*shape, generator=g)).to(dtype).to(device)

    token_lora = torch.tensor([0, 1, -1, 0, 1][:m], dtype=torch.int32)
    return dict(
        out=torch.zeros(m, K_TOP, S * N, dtype=dtype, device=device),
        x=rnd(m, K),
        topk_ids=torch.randint(0, E, (m, K_TOP), generator=g, dtype=torch.int32).to(device),
        topk_weights=torch.rand(m, K_TOP, generator=g).to(dtype).to(device),
        token_lora=token_lora.to(device),
        adapter_enabled=torch.ones(L, dtype=torch.int32, device=device),
        lora_a=[rnd(L, E, R, K) for _ in range(S)],
        lora_b=[rnd(L, E, N, R) for _ in range(S)],
        mul_routed_weight=True,
    )


# ---- mutations: each changes exactly one thing of the valid call -------------------------------------
def _set(**changes):
    def mutate(kw: dict) -> None:
        kw.update({k: (v(kw) if callable(v) else v) for k, v in changes.items()})

    return mutate


def _set_id(row: int, col: int, value: int):
    def mutate(kw: dict) -> None:
        ids = kw["topk_ids"].clone()
        ids[row, col] = value
        kw["topk_ids"] = ids
        kw["validate_ids"] = True

    return mutate


def _set_slot(row: int, value: int):
    def mutate(kw: dict) -> None:
        tl = kw["token_lora"].clone()
        tl[row] = value
        kw["token_lora"] = tl
        kw["validate_ids"] = True

    return mutate


def _lora(name: str, index: int, fn):
    def mutate(kw: dict) -> None:
        ws = list(kw[name])
        ws[index] = fn(ws[index])
        kw[name] = ws

    return mutate


def _other_strides(w: torch.Tensor) -> torch.Tensor:
    """Same shape and values, different strides (last two dims stored transposed)."""
    out = w.transpose(2, 3).contiguous().transpose(2, 3)
    assert out.shape == w.shape and out.stride() != w.stride()
    return out


def _config(**kw):
    return _set(config=MoeLoraConfig(**kw))


def _align_ws(sorted_cols: int | None = None, expert_cols: int | None = None, ntp_len: int = L, rows: int = L):
    """A workspace whose align buffers have the given widths (None: exactly what is needed)."""

    def mutate(kw: dict) -> None:
        dev = kw["x"].device
        p = padded_length(M * K_TOP, E, BLOCK_M)
        good = alloc_align(L, M * K_TOP, E, BLOCK_M, dev)
        sc = p if sorted_cols is None else sorted_cols
        ec = p // BLOCK_M if expert_cols is None else expert_cols
        align = type(good)(
            torch.empty((rows, sc), dtype=torch.int32, device=dev),
            torch.empty((rows, ec), dtype=torch.int32, device=dev),
            torch.empty((ntp_len,), dtype=torch.int32, device=dev),
        )
        kw["config"] = MoeLoraConfig(block_m=BLOCK_M)
        kw["workspace"] = Workspace(align=align)

    return mutate


def _intermediate(shape, dtype=torch.float32):
    def mutate(kw: dict) -> None:
        kw["config"] = MoeLoraConfig(block_m=BLOCK_M)
        kw["workspace"] = Workspace(intermediate=torch.zeros(shape, dtype=dtype, device=kw["x"].device))

    return mutate


INVALID = [
    # ---- x ----
    pytest.param(_set(x=lambda kw: kw["x"][None]), ValueError, r"^x: expected 2 dimensions", id="x-ndim-3"),
    pytest.param(_set(x=lambda kw: kw["x"][0]), ValueError, r"^x: expected 2 dimensions", id="x-ndim-1"),
    pytest.param(_set(x=lambda kw: kw["x"].to(torch.int32)), TypeError, r"^x: dtype torch.int32", id="x-dtype-int"),
    pytest.param(
        _set(x=lambda kw: torch.zeros(7, K, dtype=DTYPE, device=kw["x"].device)),
        ValueError,
        r"^x: 7 rows; expected M=5 \(per_token\) or M\*k=10",
        id="x-rows-neither-M-nor-Mk",
    ),
    pytest.param(_set(x=lambda kw: kw["x"][:, :-1]), ValueError, r"^x: width 19 != K=20", id="x-width-not-K"),
    pytest.param(
        _set(layout="per_routed"),
        ValueError,
        r"^x: 5 rows but layout 'per_routed' needs 10",
        id="layout-per_routed-contradicts-x",
    ),
    pytest.param(
        _set(x=lambda kw: kw["x"].repeat_interleave(K_TOP, 0), layout="per_token"),
        ValueError,
        r"^x: 10 rows but layout 'per_token' needs 5",
        id="layout-per_token-contradicts-x",
    ),
    pytest.param(_set(layout="tokens"), ValueError, r"^layout: 'tokens' is not one of", id="layout-unknown"),
    pytest.param(
        _set(x=lambda kw: kw["x"].numpy(force=True)), TypeError, r"^x: expected a torch.Tensor", id="x-numpy-array"
    ),
    # ---- routing ----
    pytest.param(
        _set(topk_weights=lambda kw: kw["topk_weights"][:, :1]),
        ValueError,
        r"^topk_weights: shape \(5, 1\) != topk_ids shape \(5, 2\)",
        id="topk_weights-shape",
    ),
    pytest.param(
        _set(topk_ids=lambda kw: kw["topk_ids"].tolist()),
        TypeError,
        r"^topk_ids: expected a torch.Tensor, got list",
        id="topk_ids-list",
    ),
    pytest.param(
        _set(topk_ids=lambda kw: kw["topk_ids"].float()),
        TypeError,
        r"^topk_ids: dtype torch.float32",
        id="topk_ids-float",
    ),
    pytest.param(
        _set(topk_ids=lambda kw: kw["topk_ids"][:, :0]),
        ValueError,
        r"^topk_ids: needs at least one",
        id="topk_ids-zero-columns",
    ),
    pytest.param(
        _set(token_lora=lambda kw: kw["token_lora"][:-1]),
        ValueError,
        r"^token_lora: length 4 != M=5",
        id="token_lora-length",
    ),
    pytest.param(
        _set(adapter_enabled=lambda kw: torch.ones(L + 1, dtype=torch.int32, device=kw["x"].device)),
        ValueError,
        r"^adapter_enabled: length 3 != L=2",
        id="adapter_enabled-length",
    ),
    pytest.param(
        _set(adapter_enabled=lambda kw: kw["adapter_enabled"].float()),
        TypeError,
        r"^adapter_enabled: dtype torch.float32",
        id="adapter_enabled-float",
    ),
    pytest.param(
        _set_id(0, 1, E), ValueError, r"^topk_ids: values must lie in \[0, E=3\)", id="validate_ids-topk_ids-ge-E"
    ),
    pytest.param(
        _set_id(2, 0, -1), ValueError, r"^topk_ids: values must lie in \[0, E=3\)", id="validate_ids-topk_ids-negative"
    ),
    pytest.param(
        _set_slot(1, -2),
        ValueError,
        r"^token_lora: values must lie in \[-1, L=2\)",
        id="validate_ids-token_lora-lt-minus1",
    ),
    pytest.param(
        _set_slot(4, L), ValueError, r"^token_lora: values must lie in \[-1, L=2\)", id="validate_ids-token_lora-ge-L"
    ),
    # ---- weights ----
    pytest.param(
        _set(lora_a=lambda kw: [w.float() for w in kw["lora_a"]]),
        TypeError,
        r"^lora_a\[0\]: dtype torch.float32 not allowed",
        id="lora_a-dtype-not-x-dtype",
    ),
    pytest.param(
        _lora("lora_a", 1, lambda w: w.float()),
        TypeError,
        r"^lora_a\[1\]: dtype torch.float32",
        id="lora_a-second-slice-dtype",
    ),
    pytest.param(
        _set(lora_b=lambda kw: [torch.zeros(L, E, N, R + 1, dtype=DTYPE, device=kw["x"].device)] * S),
        ValueError,
        r"^lora_b: shape \(2, 3, 8, 5\) must be \(L=2, E=3, N, R=4\)",
        id="lora_b-rank",
    ),
    pytest.param(
        _set(lora_b=lambda kw: [torch.zeros(L, E - 1, N, R, dtype=DTYPE, device=kw["x"].device)] * S),
        ValueError,
        r"^lora_b: shape \(2, 2, 8, 4\) must be",
        id="lora_b-experts",
    ),
    pytest.param(
        _set(lora_b=lambda kw: kw["lora_b"][:1]),
        ValueError,
        r"^lora_b: 1 slices but lora_a has 2",
        id="slice-count-differs",
    ),
    pytest.param(
        _lora("lora_a", 1, _other_strides),
        ValueError,
        r"^lora_a\[1\]: every slice must share shape and strides",
        id="lora_a-slice-strides-differ",
    ),
    pytest.param(
        _lora("lora_b", 1, lambda w: w[:, :, :-1]),
        ValueError,
        r"^lora_b\[1\]: every slice must share shape",
        id="lora_b-slice-shape-differs",
    ),
    pytest.param(
        _set(lora_a=lambda kw: kw["lora_a"][0]),
        TypeError,
        r"^lora_a: expected a non-empty list",
        id="lora_a-bare-tensor",
    ),
    pytest.param(_set(lora_a=[]), TypeError, r"^lora_a: expected a non-empty list", id="lora_a-empty"),
    pytest.param(
        _lora("lora_b", 0, lambda w: w.tolist()),
        TypeError,
        r"^lora_b\[0\]: expected a torch.Tensor",
        id="lora_b-slice-not-tensor",
    ),
    pytest.param(
        _lora("lora_a", 0, lambda w: w[0]), ValueError, r"^lora_a\[0\]: expected 4 dimensions", id="lora_a-ndim"
    ),
    # ---- out / offset ----
    pytest.param(
        _set(out=lambda kw: kw["out"][:, :, :-1]),
        ValueError,
        r"^out: shape \(5, 2, 15\) must be \(M=5, k=2, W>=offset\+S\*N=16\)",
        id="out-too-narrow",
    ),
    pytest.param(
        _set(offset=1),
        ValueError,
        r"^out: shape \(5, 2, 16\) must be .*W>=offset\+S\*N=17",
        id="out-too-narrow-for-offset",
    ),
    pytest.param(_set(out=lambda kw: kw["out"][:, :1]), ValueError, r"^out: shape \(5, 1, 16\)", id="out-wrong-k"),
    pytest.param(
        _set(out=lambda kw: kw["out"].float()), TypeError, r"^out: dtype torch.float32 not allowed", id="out-dtype"
    ),
    pytest.param(
        _set(out=lambda kw: kw["out"].reshape(M * K_TOP, S * N)),
        ValueError,
        r"^out: expected 3 dimensions",
        id="out-ndim",
    ),
    pytest.param(_set(offset=-1), ValueError, r"^offset: must be an int >= 0, got -1", id="offset-negative"),
    pytest.param(_set(offset=1.0), ValueError, r"^offset: must be an int >= 0, got 1.0", id="offset-float"),
    # ---- config ----
    pytest.param(
        _config(shrink=TileConfig(block_n=24)),
        ValueError,
        r"^shrink\.block_n=24: must be a power of two",
        id="config-block_n-not-pow2",
    ),
    pytest.param(
        _config(expand=TileConfig(block_n=8)),
        ValueError,
        r"^expand\.block_n=8: must be a power of two",
        id="config-block_n-lt-16",
    ),
    pytest.param(
        _config(shrink=TileConfig(block_k=512)), ValueError, r"^shrink\.block_k=512", id="config-block_k-gt-256"
    ),
    pytest.param(
        _config(shrink=TileConfig(split_k=0)),
        ValueError,
        r"^shrink\.split_k=0: must be an int in \[1, 64\]",
        id="config-split_k-0",
    ),
    pytest.param(_config(expand=TileConfig(num_warps=3)), ValueError, r"^expand\.num_warps=3", id="config-num_warps"),
    pytest.param(_config(block_m=24), ValueError, r"^block_m=24: must be a power of two", id="config-block_m"),
    pytest.param(
        _config(align="fast"),
        ValueError,
        r"^align='fast': must be one of auto, triton, torch",
        id="config-align-unknown",
    ),
    pytest.param(
        _set(config={"block_m": 16}), TypeError, r"^config: expected MoeLoraConfig, got dict", id="config-dict"
    ),
    # A float block size must be refused with a message naming the field, not a bare `&` TypeError.
    pytest.param(
        _config(shrink=TileConfig(block_n=32.0)), (ValueError, TypeError), r"block_n", id="config-block_n-float"
    ),
    # ---- workspace ----
    pytest.param(
        _intermediate((S, M * K_TOP, R + 1)),
        ValueError,
        r"^workspace\.intermediate: shape \(2, 10, 5\) != \(S, M\*k, R\) = \(2, 10, 4\)",
        id="workspace-intermediate-shape",
    ),
    pytest.param(
        _intermediate((S, M, R)),
        ValueError,
        r"^workspace\.intermediate: shape \(2, 5, 4\)",
        id="workspace-intermediate-per-token-rows",
    ),
    pytest.param(
        _intermediate((S, M * K_TOP, R), torch.float16),
        TypeError,
        r"^workspace\.intermediate: dtype torch.float16 not allowed",
        id="workspace-intermediate-dtype",
    ),
    pytest.param(
        _intermediate((S * M * K_TOP, R)),
        ValueError,
        r"^workspace\.intermediate: expected 3 dimensions",
        id="workspace-intermediate-ndim",
    ),
    pytest.param(
        _align_ws(sorted_cols=padded_length(M * K_TOP, E, BLOCK_M) - 1),
        ValueError,
        r"^workspace\.align\.sorted_token_ids: shape \(2, 63\) must be \(L=2, >=64\)",
        id="workspace-align-sorted-too-narrow",
    ),
    pytest.param(
        _align_ws(expert_cols=padded_length(M * K_TOP, E, BLOCK_M) // BLOCK_M - 1),
        ValueError,
        r"^workspace\.align\.expert_ids: shape \(2, 3\) must be \(L=2, >=4\)",
        id="workspace-align-expert_ids-too-narrow",
    ),
    pytest.param(
        _align_ws(rows=L + 1),
        ValueError,
        r"^workspace\.align\.sorted_token_ids: shape \(3, 64\)",
        id="workspace-align-wrong-slot-rows",
    ),
    pytest.param(
        _align_ws(ntp_len=L - 1),
        ValueError,
        r"^workspace\.align\.num_tokens_post_padded: length must be L=2",
        id="workspace-align-ntp-length",
    ),
    # A bare tensor (or any non-Workspace) must be a TypeError naming `workspace`, not a RuntimeError from
    # `workspace or Workspace()` / an AttributeError from `ws.intermediate`.
    pytest.param(
        _set(workspace=lambda kw: torch.zeros(S, M * K_TOP, R, device=kw["x"].device)),
        TypeError,
        r"workspace",
        id="workspace-bare-tensor",
    ),
    pytest.param(
        _set(workspace=lambda kw: Workspace(align=torch.zeros(L, 64, dtype=torch.int32, device=kw["x"].device))),
        TypeError,
        r"workspace\.align",
        id="workspace-align-not-AlignBuffers",
    ),
]


@pytest.mark.parametrize("mutate, exc, match", INVALID)
def test_invalid_call_is_refused(device, mutate, exc, match):
    kw = _valid_call(device)
    mutate(kw)
    out = kw["out"]
    before = out.clone() if isinstance(out, torch.Tensor) else None
    with pytest.raises(exc, match=match):
        fused_moe_lora(**kw)
    if before is not None:  # refused before launching anything: out is untouched
        assert torch.equal(out, before)


@pytest.mark.skipif(not kernels.INTERPRET, reason="the bf16 split-K limit is the interpreter's only")
def test_bf16_expand_split_k_refused_under_interpreter(device, monkeypatch):
    kw = _valid_call(device, dtype=torch.bfloat16)
    kw["config"] = MoeLoraConfig(expand=TileConfig(split_k=2))
    fused_moe_lora(**kw)  # accepted on the patched interpreter (fuzz/runtime/interpreter.py), refused on a plain one:
    monkeypatch.setattr(kernels.moe_lora, "interpreter_bf16_ok", lambda: False)
    with pytest.raises(ValueError, match=r"^config\.expand\.split_k > 1 with bfloat16"):
        fused_moe_lora(**kw)
    # the same call with split_k = 1 is fine: the check is about split-K, not bf16
    kw["config"] = MoeLoraConfig(expand=TileConfig(split_k=1))
    fused_moe_lora(**kw)


def test_valid_baseline_changes_out(device):
    """The base of every mutation above is accepted and computes the op (so the refusals are not vacuous)."""
    kw = _valid_call(device)
    out = kw["out"]
    before = out.clone()
    ret = fused_moe_lora(**kw, validate_ids=True)
    assert ret is out
    assert not torch.equal(out, before)
    ref = moe_lora_fp64(OpArgs(**kw, offset=0, layout="per_token"))  # the call's defaults
    expected = ref.delta.reshape(M, K_TOP, S * N)
    got = out.double().cpu()
    scale = float(expected.abs().max())
    assert scale > 0
    assert torch.allclose(got, expected.cpu(), rtol=1e-2, atol=1e-2 * scale)
    # token 2 maps to the base model (slot -1): its rows get no delta
    assert torch.equal(out[2], before[2])
    assert bool((out[[0, 1, 3, 4]] != 0).any())


def test_valid_baseline_with_explicit_workspace(device):
    """The workspace mutations start from a workspace of exactly the needed size, which is accepted."""
    kw = _valid_call(device)
    dev = kw["x"].device
    ws = Workspace(
        intermediate=torch.empty(S, M * K_TOP, R, dtype=torch.float32, device=dev),
        align=alloc_align(L, M * K_TOP, E, BLOCK_M, dev),
    )
    fused_moe_lora(**kw, config=MoeLoraConfig(block_m=BLOCK_M), workspace=ws)
    assert bool((kw["out"] != 0).any())


def test_empty_batch_returns_out_unchanged(device):
    kw = _valid_call(device, m=0)
    assert kw["x"].shape == (0, K) and kw["topk_ids"].shape == (0, K_TOP)
    out = kw["out"]
    before = out.clone()
    ret = fused_moe_lora(**kw, validate_ids=True)
    assert ret is out
    assert ret.shape == (0, K_TOP, S * N)
    assert torch.equal(ret, before)


def test_empty_batch_still_checks_arguments(device):
    """M = 0 skips the launch, not the checks."""
    kw = _valid_call(device, m=0)
    kw["out"] = kw["out"][:, :, :-1]
    with pytest.raises(ValueError, match=r"^out: shape \(0, 2, 15\)"):
        fused_moe_lora(**kw)
