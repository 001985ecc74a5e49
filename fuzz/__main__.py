"""`python -m fuzz` in a source checkout: an alias of `moe-lora-fuzz` / `python -m moe_lora_fuzz` (the names
every printed command uses). The CLI runs under the installed namespace (moe_lora_fuzz.fuzz), so every module
is imported once, under one name."""

import sys

from moe_lora_fuzz.fuzz.cli import main

if __name__ == "__main__":
    sys.exit(main())
