"""Stage 6, execution: what case i of a campaign is (`CampaignConfig`, `case_for`, the prelude's first cases)
and the worker process that judges cases out of process and survives crashes, hangs and a broken device
(worker).

May import: runtime, space, data, targets, judgement, records.
"""
