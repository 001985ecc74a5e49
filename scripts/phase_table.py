"""Where a campaign's time went: the phase table of one or more report.json files (fuzz.runtime.phases).

    python scripts/phase_table.py OUT_DIR_OR_REPORT [...]

Phases nest by path: "oracle/impl/jit" is Triton compiling (or loading from its disk cache) kernel variants
inside the implementation's call, "oracle/twins/impl" the implementation inside the metamorphic twins,
"ipc" the round trip to the worker beyond what the worker timed, "unanswered" the cases it never answered (a hang,
a crash, a case the budget cut), "startup" the worker's start.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from moe_lora_fuzz.fuzz.runtime.phases import table

    for arg in sys.argv[1:]:
        path = Path(arg)
        path = path / "report.json" if path.is_dir() else path
        r = json.loads(path.read_text())
        totals = {k: [v["s"], v["n"]] for k, v in r.get("phases", {}).items()}
        jit = sum(n for k, (_, n) in totals.items() if k.endswith("/jit"))
        print(
            f"## {path}: {r['impl']} on {r['device']} ({r['profile']}), {r['cases']} cases in {r['elapsed_s']} s "
            f"= {r['cases_per_s']} cases/s; {jit} kernel variants compiled or loaded by the worker; "
            f"compiling ahead: {r.get('precompile') or 'none'}"
        )
        print("\n".join(table(totals, r["elapsed_s"])) + "\n")


if __name__ == "__main__":
    main()
