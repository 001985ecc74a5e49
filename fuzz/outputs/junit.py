"""A campaign's result as JUnit XML (`moe-lora-fuzz run --junitxml PATH`), for CI dashboards that read test
reports (GitHub, GitLab, Jenkins): one suite, one passing test case `campaign` that states what ran, and one
failing test case per distinct finding, whose text is its REPRO command."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from moe_lora_fuzz.fuzz.records.repro import write_atomic

_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")  # not allowed in XML 1.0


def _text(value: object) -> str:
    return _XML_UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def junit_xml(report: dict) -> str:
    """The XML text of a report.json-shaped dict (runner.Report.to_dict())."""
    impl, findings = report.get("impl", "?"), report.get("findings", [])
    suite = ET.Element(
        "testsuite",
        name="moe-lora-fuzz",
        tests=str(1 + len(findings)),
        failures=str(len(findings)),
        errors="0",
        skipped="0",
        time=f"{float(report.get('elapsed_s', 0.0)):.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for key in ("impl", "device", "profile", "seed", "campaign", "harness"):
        ET.SubElement(props, "property", name=key, value=_text(report.get(key)))
    classname = _text(f"moe-lora-fuzz.{impl}")
    campaign = ET.SubElement(suite, "testcase", classname=classname, name="campaign", time="0")
    ET.SubElement(campaign, "system-out").text = _text(
        f"{report.get('cases', 0)} cases, {len(findings)} distinct findings, "
        f"{len(report.get('root_causes', []))} root causes"
    )
    for f in findings:
        case = ET.SubElement(suite, "testcase", classname=classname, name=_text(f.get("signature", "?")), time="0")
        failure = ET.SubElement(
            case, "failure", type=_text(f.get("kind", "?")), message=_text(str(f.get("message", ""))[:500])
        )
        failure.text = _text(
            f"{f.get('kind')}: {f.get('message', '')}\nseen {f.get('count', 1)} times, first at case "
            f"{f.get('case_index')}\nREPRO: moe-lora-fuzz replay {f.get('repro')} --impl {impl}"
        )
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def write_junit(path: Path, report, cfg=None) -> None:
    """Write the JUnit XML of a runner.Report (or its dict) atomically."""
    data = report if isinstance(report, dict) else report.to_dict()
    write_atomic(Path(path), junit_xml(data))
