"""--sanitize-every: replay a campaign's case under compute-sanitizer memcheck (SPEC §5), GPU only."""

from __future__ import annotations

import subprocess
import sys

from moe_lora_fuzz.fuzz.records.repro import Repro, save


def sanitize(cfg, report, case, index: int, v) -> None:
    """Replay the case under compute-sanitizer memcheck (SPEC §5) in a child process; errors are kept."""
    path = cfg.out / "sanitize" / f"case-{cfg.campaign_id}-{index}.json"
    save(Repro(case, cfg.impl, cfg.device, v, report.env, cfg.timeout, cfg.campaign_id), path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "moe_lora_fuzz.fuzz.cli",
            "replay",
            str(path),
            "--sanitize",
            "--impl",
            cfg.impl,
            "--case-timeout",
            str(cfg.timeout),
        ],
        capture_output=True,
        text=True,
        timeout=cfg.timeout * 5,
    )
    report.sanitizer["runs"] += 1
    if "errors reported" in proc.stdout:
        report.sanitizer["errors"].append({"case_index": index, "repro": str(path), "output": proc.stdout[-2000:]})
        if not cfg.quiet:
            print(f"SANITIZER: memcheck errors on case {index}; repro {path}", file=sys.stderr, flush=True)
    else:
        path.unlink(missing_ok=True)
