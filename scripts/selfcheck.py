"""The environment self-check on its own (fuzz/judgement/selfcheck.py): our kernels and the references on known
cases, in this process, on the interpreter (cpu) or the GPU (cuda). Prints the versions and the verdict; exit 0 when the
environment judges correctly, 2 (one `error:` line) when findings here would be the environment's.

    python scripts/selfcheck.py --device cpu
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    device = p.parse_args().device
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    from moe_lora_fuzz.fuzz.judgement import selfcheck
    from moe_lora_fuzz.fuzz.runtime import interpreter

    patched = interpreter.install_if_interpreting()
    t0 = time.monotonic()
    failure = selfcheck.run_here(device)
    took = time.monotonic() - t0
    patches = sorted(patched) or interpreter.NOT_PATCHED_REASON
    print(f"{selfcheck.versions()}; device {device}; interpreter patches: {patches}")
    if failure:
        print(f"error: {selfcheck.message(device, failure)}", file=sys.stderr)
        return 2
    print(f"self-check passed: {len(selfcheck.CASES)} known cases in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
