"""CLI: moe-lora-fuzz (or python -m moe_lora_fuzz) {run,list,replay,minimize,triage,export,merge}.

Exit 0 clean, 1 findings (or failing), 2 usage or environment error (one `error:` line), 130/143 interrupted
by SIGINT/SIGTERM. Paths are made absolute as they are parsed. Replay and minimise run only our own code
(`ours`, `mutant:<id>`) unless --impl names another implementation on the command line.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Callable

from moe_lora_fuzz.fuzz import __version__
from moe_lora_fuzz.fuzz.commands.common import _abs_path, _device, _fail, _Formatter  # noqa: F401 (_device: tests import it from here)
from moe_lora_fuzz.fuzz.commands.replay import (
    add_export_args,
    add_minimize_args,
    add_replay_args,
    add_triage_args,
    cmd_export,
    cmd_minimize,
    cmd_replay,
    cmd_triage,
)
from moe_lora_fuzz.fuzz.commands.run import (  # noqa: F401 (_print_root_causes: tests import it from here)
    _print_root_causes,
    add_list_args,
    add_run_args,
    cmd_list,
    cmd_run,
)


# ---- dispatch: a new subcommand is one entry here ----------------------------------------------------------
@dataclass(frozen=True)
class Command:
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def cmd_merge(a) -> int:
    from moe_lora_fuzz.fuzz.campaign.merge import MergeError, merge_reports, summary

    try:
        merged = merge_reports(a.dirs, a.out)
    except MergeError as e:
        _fail(str(e))
    from moe_lora_fuzz.fuzz.escape import printable_lines  # the summary quotes the shards' report files

    print(printable_lines(summary(merged, a.out)))
    return 1 if merged["findings"] else 0


def add_merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", type=_abs_path, nargs="+", metavar="DIR", help="shard output directories (any hosts)")
    p.add_argument("--out", type=_abs_path, required=True, help="directory for the merged report.json and repros")


COMMANDS: dict[str, Command] = {
    "run": Command("a time-budgeted campaign", add_run_args, cmd_run),
    "list": Command("list implementation names, each mutant with its description", add_list_args, cmd_list),
    "replay": Command("re-run a repro file", add_replay_args, cmd_replay),
    "minimize": Command("reduce a repro's case while it fails the same way", add_minimize_args, cmd_minimize),
    "export": Command("write a standalone pytest regression test", add_export_args, cmd_export),
    "triage": Command("group the findings of finished campaigns into root causes", add_triage_args, cmd_triage),
    "merge": Command("merge shard campaigns' output directories (any hosts) into one", add_merge_args, cmd_merge),
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moe-lora-fuzz", description=__doc__, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for name, c in COMMANDS.items():
        c.add_args(sub.add_parser(name, help=c.help, description=c.help, formatter_class=_Formatter))
    return p


def main(argv=None) -> int:
    from moe_lora_fuzz.fuzz.escape import PrintableStream

    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrintableStream(sys.stdout), PrintableStream(sys.stderr)  # text from files, escaped
    try:
        a = _parser().parse_args(argv)
        return COMMANDS[a.cmd].run(a)
    except KeyboardInterrupt:  # outside a campaign (which handles its own): no traceback
        print("interrupted by SIGINT", file=sys.stderr)
        return 130
    finally:
        sys.stdout, sys.stderr = saved


if __name__ == "__main__":
    sys.exit(main())
