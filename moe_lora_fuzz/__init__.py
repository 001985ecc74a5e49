"""moe-lora-fuzz: correctness verification and fuzzing for fused MoE LoRA Triton kernels.

The public Python API (docs/api.md), imported on first use so that `import moe_lora_fuzz` stays cheap and
decides nothing about Triton:

    judge(case, impl, device)      judge one case: a Verdict (kind, message, worst elements)
    Case                           one point of the knob space (frozen, JSON round-trip, tensors from a seed)
    Verdict                        what the oracle says about one case
    from_fused, from_shrink_expand wrap a kernel in an upstream calling convention as an implementation
    load_file                      an upstream kernel file (vLLM or SGLang) as an implementation
    Capabilities, CAPABILITY_KEYS  what an implementation declares it accepts
    use_device(device)             resolve "auto" and prepare the CPU interpreter when it is "cpu"

The command line is `moe-lora-fuzz` (or `python -m moe_lora_fuzz`). Subpackages, one installed namespace so
that nothing lands in site-packages under a generic name (`kernels` is also Hugging Face's package):

    moe_lora_fuzz.contract   the op's contract and the launch-configuration type
    moe_lora_fuzz.kernels    our Triton kernels and their seeded-bug mutants
    moe_lora_fuzz.reference  the fp64 and naive references
    moe_lora_fuzz.fuzz       the fuzzer's machinery (not a stable API: its modules may move)

An installed wheel holds them inside this package; in a source checkout they are the checkout's top-level
folders, which this package's search path then includes.
"""

from pathlib import Path as _Path

__version__ = "0.2.0"

_here = _Path(__file__).resolve().parent
if not (_here / "fuzz").is_dir():  # a source checkout: the packages are the checkout's top-level folders
    __path__.append(str(_here.parent))

_API = (
    "CAPABILITY_KEYS",
    "Capabilities",
    "CapabilityError",
    "Case",
    "KINDS",
    "Verdict",
    "from_fused",
    "from_shrink_expand",
    "judge",
    "load_file",
    "use_device",
)
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'moe_lora_fuzz' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
