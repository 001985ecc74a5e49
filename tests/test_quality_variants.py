"""Quality with variant-aware drawing on (docs/variants.md): every seeded bug is still found, with a kind that
matches its mechanism, and the correct kernels still pass, when most cases are drawn inside kernel variants
already seen (on a GPU `--variant-draw auto` is on; here it is forced on under the interpreter)."""

import pytest
from moe_lora_fuzz.fuzz.campaign.runner import CampaignConfig, run_campaign
from moe_lora_fuzz.kernels import MUTANTS

from tests.test_quality import CASE_BUDGET, EXPECTED_KIND

# No mutant pre-merge (the CPU interpreter draws by variant only when forced; test_quality.py finds every mutant
# pre-merge with drawing off); the whole catalogue runs in the GPU suite and in slow runs. The correct kernels' campaign
# with drawing forced on (below) stays pre-merge: a false alarm there is a harness bug.
PREMERGE: set = set()


@pytest.mark.quality
@pytest.mark.parametrize(
    "mutant", [pytest.param(m, marks=() if m in PREMERGE else pytest.mark.slow) for m in sorted(MUTANTS)]
)
def test_campaign_finds_mutant_drawing_by_variant(mutant, device, tmp_path):
    if device == "cuda" and mutant == "align-chunk-plus-one":
        pytest.skip("compiled, align's chunk is 128 routed pairs: see tests/test_quality.py")
    cfg = CampaignConfig(
        impl=f"mutant:{mutant}",
        device=device,
        budget=600,
        max_cases=CASE_BUDGET,
        seed=0,
        out=tmp_path,
        stop_after=3,
        quiet=True,
        variant_draw="on",
    )
    report = run_campaign(cfg)
    kinds = {f["kind"] for f in report.findings.values()}
    assert report.to_dict()["variants"]["draw"] == "on"
    assert report.findings, f"{mutant}: no finding in {report.cases} cases"
    assert kinds & EXPECTED_KIND[mutant], f"{mutant}: found {kinds}, expected one of {EXPECTED_KIND[mutant]}"


@pytest.mark.quality
def test_correct_kernels_pass_drawing_by_variant(device, tmp_path, monkeypatch):
    from moe_lora_fuzz.fuzz.campaign import variant_draw

    monkeypatch.setattr(variant_draw, "STREAM_FIRST", 0)  # drawn by variant from the first case after the prelude
    cfg = CampaignConfig(
        impl="ours", device=device, budget=600, max_cases=24, seed=0, out=tmp_path, quiet=True, variant_draw="on"
    )
    report = run_campaign(cfg)
    assert report.cases == 24
    assert not report.findings, report.findings
    choices = report.to_dict()["variants"]["choices"]
    assert choices["cloned"] + choices["explore"] + choices["exploit"] > 12, choices  # it did draw by variant
