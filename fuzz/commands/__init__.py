"""The command line's pieces (stage cli, with fuzz/cli.py): shared argument types and error lines (common), the
`run` and `list` commands (run), and `replay`, `minimize`, `triage` and `export` (replay). fuzz/cli.py
dispatches to them; a new subcommand is one module here and one entry in fuzz/cli.py's COMMANDS.

May import: every stage (runtime, space, data, targets, judgement, records, execution, triage, outputs,
campaign).
"""
