"""moe-lora-fuzz: one installed namespace over the harness's packages, so none of them lands in site-packages
under a generic top-level name (`kernels` is also Hugging Face's package, `fuzz` and `reference` are common):

    moe_lora_fuzz.contract   the op's contract and the launch-configuration type
    moe_lora_fuzz.kernels    our Triton kernels and their seeded-bug mutants
    moe_lora_fuzz.reference  the fp64 and naive references
    moe_lora_fuzz.fuzz       the fuzzer (CLI: moe-lora-fuzz, or python -m fuzz in a checkout)

An installed wheel holds them inside this package; in a source checkout they are the checkout's top-level
folders, which this package's search path then includes.
"""

from pathlib import Path as _Path

__version__ = "0.2.0"

_here = _Path(__file__).resolve().parent
if not (_here / "fuzz").is_dir():  # a source checkout: the packages are the checkout's top-level folders
    __path__.append(str(_here.parent))
