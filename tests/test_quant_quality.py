"""Quality for the quantized kernels: our quantized kernels pass the pre-merge-sized campaign that catches every
quantized seeded bug (tests/test_quality.py runs the mutants: quant-scale-next-block, quant-channel-scale-by-k,
quant-scale-slot0, quant-act-scale-ignored), so those catches are not false alarms of the bound."""

import pytest
from moe_lora_fuzz.fuzz.campaign.runner import CampaignConfig, run_campaign


@pytest.mark.quality
def test_ours_quant_passes_a_campaign(device, tmp_path):
    cfg = CampaignConfig(impl="ours-quant", device=device, budget=600, max_cases=24, seed=0, out=tmp_path, quiet=True)
    report = run_campaign(cfg)
    assert report.cases == 24
    assert not report.findings, report.findings
    quant = report.coverage.to_dict()["knobs"]["quant"]
    assert set(quant) == {"fp8_w8a8", "int8_w8a8", "int8_w8a16"}, quant  # every scheme judged
