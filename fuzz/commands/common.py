"""What every command shares: the argument types (paths made absolute as they are parsed), the one `error:`
line and exit 2, the device choice, the progress line and the worker a command runs cases in.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import textwrap
from pathlib import Path


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every option's help; descriptions kept as written; paths (absolute defaults such as
    --out's) never broken at their hyphens when help text is wrapped."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)


def _fail(msg: str) -> None:
    from moe_lora_fuzz.fuzz.escape import printable  # one line, and nothing from a file acts on the terminal

    print(f"error: {printable(msg)}", file=sys.stderr)
    raise SystemExit(2)


def _device(name: str) -> str:
    """Resolve --device and prepare the environment before anything imports triton (moe_lora_fuzz.device)."""
    from moe_lora_fuzz.device import use_device

    try:
        name = use_device(name)  # cpu: the interpreter, patched (bf16 dots/atomics and TF32 as on a GPU)
    except ValueError as e:
        _fail(f"--{e}")  # use_device's messages start with "device ..."
    if name == "cpu":
        _warn_unpatched()
    elif os.environ.get("TRITON_INTERPRET") == "1":
        _fail("--device cuda: TRITON_INTERPRET=1 is set; unset it to compile for the GPU")
    return name


def _warn_unpatched() -> None:
    """One console line at the start when the interpreter could not be patched (docs/versions.md)."""
    from moe_lora_fuzz.fuzz.escape import printable
    from moe_lora_fuzz.fuzz.runtime import interpreter

    if interpreter.NOT_PATCHED_REASON and not getattr(_warn_unpatched, "said", False):
        _warn_unpatched.said = True
        print(f"warning: Triton's interpreter {printable(interpreter.NOT_PATCHED_REASON)}", file=sys.stderr)


def _progress_line(text: str) -> None:
    """Progress of triage and minimise on stderr; it may quote report and repro files, so it is escaped."""
    from moe_lora_fuzz.fuzz.escape import printable_lines

    print(printable_lines(text), file=sys.stderr, flush=True)


def _default_out(impl: str) -> Path:
    """fuzz-out/<UTC time>-<implementation>: a new directory per run, so a second run never meets the first's."""
    import re
    import time

    target, _, func = impl.rpartition(":")
    if target.endswith(".py"):  # path/to/file.py:function (or vllm:path/to/file.py) -> file-function
        framework = target.split(":", 1)[0] + "-" if target.startswith(("vllm:", "sglang:")) else ""
        impl = f"{framework}{Path(target).stem}-{func}"
    elif impl.startswith(("vllm:", "sglang:")) and impl.endswith(".py"):
        impl = f"{impl.split(':', 1)[0]}-{Path(impl).stem}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", impl).strip("-.")[:60]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = _abs_path("fuzz-out") / f"{stamp}-{slug or 'impl'}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


# ---- argument types: paths become absolute when parsed -------------------------------------------------------
def _abs_path(text: str) -> Path:
    return Path(os.path.abspath(os.path.expanduser(text)))


def _impl_name(text: str) -> str:
    """--impl with a file.py:function made absolute, so the name stored in reports works from anywhere."""
    target, sep, func = text.rpartition(":")
    if sep and target.endswith(".py") and not text.startswith("mutant:"):
        return f"{_abs_path(target)}:{func}"
    return text


def _positive(flag: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        _fail(f"{flag}: must be > 0 seconds and finite (got {value})")


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        _fail(f"--shard {text!r}: expected i/n, e.g. 0/2")
    if not (n >= 1 and 0 <= i < n):
        _fail(f"--shard {text!r}: needs n >= 1 and 0 <= i < n")
    return i, n


def _writable_dir(flag: str, path: Path, shown: Path | None = None) -> None:
    """Create the directory if needed and prove it takes a file, before any work is done."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        _fail(f"{flag} {shown or path}: cannot write there ({e.strerror or e})")


def _writable_file(flag: str, path: Path) -> None:
    if path.is_dir():
        _fail(f"{flag} {path}: is a directory; name a file")
    _writable_dir(flag, path.parent, shown=path)


def _check_builtin_impl(name: str) -> None:
    """Check our own names here; an external implementation is imported only by the worker process, so a
    bad one (even one that calls os._exit at import) is reported, never takes the CLI down."""
    from moe_lora_fuzz.fuzz.records.repro import is_builtin
    from moe_lora_fuzz.fuzz.targets.impls import ImplError, resolve

    if is_builtin(name):
        try:
            resolve(name)
        except ImplError as e:
            _fail(str(e))


def _worker(device: str, impl: str, log: Path | None = None):
    from moe_lora_fuzz.fuzz.execution.worker import Worker
    from moe_lora_fuzz.fuzz.targets.impls import ImplError

    try:
        return Worker(device, impl, log=log)
    except ImplError as e:
        _fail(str(e))
