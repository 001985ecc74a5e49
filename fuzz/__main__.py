"""`python -m fuzz` in a source checkout: the CLI runs under the installed namespace (moe_lora_fuzz.fuzz), so
every module is imported once, under one name (`moe-lora-fuzz` is the installed command)."""

import sys

from moe_lora_fuzz.fuzz.cli import main

if __name__ == "__main__":
    sys.exit(main())
