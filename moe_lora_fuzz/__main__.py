"""`python -m moe_lora_fuzz`: the same command line as the `moe-lora-fuzz` console script."""

import sys

from moe_lora_fuzz.fuzz.cli import main

if __name__ == "__main__":
    sys.exit(main())
