"""Stage 7, triage: after a finding, minimise it (minimize), tell a flaky finding from a firm one
(intermittent), classify it (classify), explain it by single-knob flips (explain) and group findings into
root causes (grouping; triager: the campaign's triage; offline: `moe-lora-fuzz triage DIR...`).

May import: runtime, space, data, targets, judgement, records, execution.
"""
