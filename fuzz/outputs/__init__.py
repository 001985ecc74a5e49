"""Stage 8, outputs: views of one campaign record. The record itself (campaign_record: report.json, written
atomically), its views for people (report_views, report_html, report_md, report_commands), JUnit XML (junit)
and repro files exported as regression tests (export).

May import: runtime, space, data, targets, judgement, records, execution, triage.
"""
