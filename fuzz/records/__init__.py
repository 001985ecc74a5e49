"""Stage 5, records: the formats on disk that later stages read back: the repro file (repro: `Repro`, its
versions and migrations, atomic writes) and the output folder (outdir: its lock, report.json's checks, shard
report paths).

May import: runtime, space, data, targets, judgement.
"""
