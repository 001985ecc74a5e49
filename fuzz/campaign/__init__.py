"""Stage 9, campaign: the time-budgeted loop over one worker (runner, casework, budget, lifecycle), compiling
ahead (precompile), replaying a corpus (corpus), steering away from known triggers (steer), the sanitizer
(sanitize) and merging shards (merge).

May import: every earlier stage (runtime, space, data, targets, judgement, records, execution, triage,
outputs).
"""
