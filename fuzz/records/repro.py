"""Repro files: versioned strict JSON (never pickle), migrated and validated field by field on load, written
atomically.

Strict JSON: a non-finite float is written as the string "NaN", "Infinity" or "-Infinity" (so any JSON reader,
e.g. `json.loads(text, parse_constant=<raise>)`, accepts our files) and read back as a float. Version 1 files,
which had bare NaN/Infinity, are still read.

Schema versions: MIGRATIONS[n] turns a version-n dict into version n+1, applied in order on load, so every
file ever written stays loadable. A knob added to `Case` later needs, besides VERSION += 1, one line:
    MIGRATIONS[2] = add_case_fields(new_knob=<its neutral value>)
and one added to the launch configuration (MoeLoraConfig, TileConfig), at its default:
    MIGRATIONS[2] = add_config_fields("shrink.new_knob", "expand.new_knob")
"""

from __future__ import annotations

import json
import math
import os
import platform
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from moe_lora_fuzz.contract import MoeLoraConfig
from moe_lora_fuzz.fuzz import __version__
from moe_lora_fuzz.fuzz.judgement.verdict import Verdict
from moe_lora_fuzz.fuzz.space.case import Case

SCHEMA = "moe-lora-fuzz-repro"
VERSION = 3
MAX_FILE_BYTES = 1 << 20  # repro files are a few KB; a bigger "repro" is not one
MAX_CASE_ELEMENTS = 1 << 26  # about 256 MB of fp32 per buffer set: far above any fuzzed case, far below a DoS
BUILTIN_IMPLS = "ours | mutant:<id>"


class ReproError(ValueError):
    """A repro file that cannot be used; the message names the field (exit 2)."""


@dataclass(frozen=True)
class Repro:
    case: Case
    impl: str
    device: str
    verdict: Verdict
    environment: dict
    case_timeout_s: float | None = None  # the per-case timeout it ran under (a hang replays with it)
    campaign: str | None = None  # id of the campaign that found it

    def command(self, path: str) -> str:
        return f"moe-lora-fuzz replay {path} --impl {self.impl} --device {self.device}"

    def to_dict(self, path: str = "FILE") -> dict:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "harness": __version__,
            "impl": self.impl,
            "device": self.device,
            "case": self.case.to_dict(),
            "verdict": self.verdict.to_dict(),
            "environment": self.environment,
            "case_timeout_s": self.case_timeout_s,
            "campaign": self.campaign,
            "replay": self.command(path),
        }


def environment() -> dict:
    import numpy
    import torch
    import triton

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "numpy": numpy.__version__,
        "cuda": torch.version.cuda,
        "gpu": None,
        "driver": None,
        "harness": __version__,
        "commit": git_commit(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        try:
            import subprocess

            env["driver"] = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout.strip()
                or None
            )
        except (OSError, subprocess.SubprocessError):
            pass
    if os.environ.get("TRITON_INTERPRET") == "1":  # what the interpreter patch (fuzz.runtime.interpreter) could do here
        from moe_lora_fuzz.fuzz.runtime import interpreter

        env["interpreter_patch"] = sorted(interpreter.PATCHED) or interpreter.NOT_PATCHED_REASON
    return env


def git_commit() -> str | None:
    """The harness's git commit, or None outside a git checkout."""
    import subprocess

    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


# ---- strict JSON ----------------------------------------------------------------------------------------
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, dict):
        return {k: _encode(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode(x) for x in v]
    return v


def dumps(obj, **kw) -> str:
    """Strict JSON text: non-finite floats become "NaN" / "Infinity" / "-Infinity" strings."""
    return json.dumps(_encode(obj), allow_nan=False, **kw)


def _number(v):
    return NONFINITE.get(v, v) if isinstance(v, str) else v


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file (a full disk leaves the old
    file, or none, and no temporary); the file is 0644. Text is written as UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; a report is meant to be read by others
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(repro: Repro, path: Path) -> None:
    write_atomic(path, dumps(repro.to_dict(str(path)), indent=2, sort_keys=True) + "\n")


# ---- migrations -----------------------------------------------------------------------------------------
def add_case_fields(**neutral) -> Callable[[dict], dict]:
    """A migration step giving knobs added to Case their neutral value in older files."""

    def step(d: dict) -> dict:
        if isinstance(d.get("case"), dict):
            d["case"] = {**neutral, **d["case"]}
        return d

    return step


def add_config_fields(*names: str) -> Callable[[dict], dict]:
    """A migration step giving launch-configuration knobs added later, named as MoeLoraConfig.flat() names them
    ("expand.new_knob", "new_top_level_knob"), their default in older files."""
    defaults = MoeLoraConfig().flat()
    unknown = [n for n in names if n not in defaults]
    if unknown:
        raise ValueError(f"add_config_fields: unknown launch-configuration knob {unknown[0]!r}")

    def step(d: dict) -> dict:
        case = d.get("case")
        config = case.get("config") if isinstance(case, dict) else None
        for name in names:
            stage, _, field = name.rpartition(".")
            target = config.get(stage) if stage and isinstance(config, dict) else config
            if isinstance(target, dict):
                target.setdefault(field, defaults[name])
        return d

    return step


def _v1_to_v2(d: dict) -> dict:
    """v2 adds the harness version, the case timeout and the campaign id (unknown for v1 files)."""
    return {"harness": None, "case_timeout_s": None, "campaign": None, **d}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {  # version n -> n + 1
    1: _v1_to_v2,
    # v3: the quantization knobs (issue 30); older files are unquantized
    2: add_case_fields(quant="none", quant_group="tensor", quant_block_n=16, quant_block_k=16, act_scale="dynamic"),
}


def migrate(d: dict) -> dict:
    version = d.get("version")
    if type(version) is not int or not (1 <= version <= VERSION):
        raise ReproError(f"version: unsupported schema version {version!r} (this build reads 1 to {VERSION})")
    while version < VERSION:
        d = MIGRATIONS[version](d)
        version += 1
        d["version"] = version
    return d


# ---- loading --------------------------------------------------------------------------------------------
def _field(d: dict, name: str, typ: type, where: str = ""):
    if name not in d:
        raise ReproError(f"{where}{name}: missing")
    v = d[name]
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is not bool):
        raise ReproError(f"{where}{name}: wrong type {type(v).__name__}, expected {typ.__name__}")
    return v


def _verdict(d: dict) -> Verdict:
    d = dict(d)
    for name in ("max_ratio", "seconds"):
        if name in d:
            d[name] = _number(d[name])
    if isinstance(d.get("worst"), list):
        d["worst"] = [{k: _number(v) for k, v in w.items()} if isinstance(w, dict) else w for w in d["worst"]]
    try:
        return Verdict.from_dict(d)
    except ValueError as e:
        raise ReproError(str(e)) from None


def parse(text: str) -> Repro:
    try:
        d = json.loads(text)
    except RecursionError:
        raise ReproError("not a repro file: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and ints over the 4300-digit conversion limit
        raise ReproError(f"not valid JSON (truncated?): {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise ReproError("top level: expected a JSON object")
    if d.get("schema") != SCHEMA:
        raise ReproError(f"schema: expected {SCHEMA!r}, got {d.get('schema')!r}")
    d = migrate(d)
    impl = _field(d, "impl", str)
    device = _field(d, "device", str)
    if device not in ("cpu", "cuda"):
        raise ReproError(f"device: must be 'cpu' or 'cuda', got {device!r}")
    try:
        case = Case.from_dict(_field(d, "case", dict))
    except ValueError as e:
        raise ReproError(str(e)) from None
    env = d.get("environment", {})
    if not isinstance(env, dict):
        raise ReproError("environment: wrong type")
    timeout = _number(d.get("case_timeout_s"))
    if timeout is not None and (
        not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not math.isfinite(timeout) or timeout <= 0
    ):
        raise ReproError(f"case_timeout_s: must be a finite number > 0 or null, got {timeout!r}")
    harness = d.get("harness")
    if harness is not None and not isinstance(harness, str):
        raise ReproError("harness: wrong type, expected a version string or null")
    campaign = d.get("campaign")
    if campaign is not None and not isinstance(campaign, str):
        raise ReproError("campaign: wrong type, expected a string or null")
    return Repro(
        case,
        impl,
        device,
        _verdict(_field(d, "verdict", dict)),
        env,
        None if timeout is None else float(timeout),
        campaign,
    )


def read_capped(path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (no device, FIFO or endless symlink target)."""
    st = os.stat(path)  # follows symlinks: a link to /dev/zero is judged by what it points at
    if not stat.S_ISREG(st.st_mode):
        raise ReproError(f"{path}: not a regular file")
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ReproError(f"{path}: larger than {limit} bytes; not a repro file")
    return data


def load(path) -> Repro:
    """Parse a repro file; every error names the file and then the field."""
    try:
        return parse(read_capped(path).decode("utf-8"))
    except OSError as e:
        raise ReproError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ReproError(f"{path}: not a text file") from None
    except ReproError as e:
        msg = str(e)
        raise ReproError(msg if msg.startswith(f"{path}:") else f"{path}: {msg}") from None


def case_elements(case: Case) -> int:
    """About how many tensor elements replaying the case allocates (inputs, outputs, workspace)."""
    routed = case.m * case.top_k
    rows = routed if case.layout == "per_routed" else case.m
    s = case.num_slots * case.num_slices
    return (
        rows * case.k_dim
        + s * case.rank * (case.k_dim + case.n_dim)
        + routed * (case.num_slices * case.n_dim + case.offset + case.extra_cols)
        + case.num_slices * routed * case.rank
        + 2 * routed
        + case.num_experts
    )


def check_size(case: Case, limit: int = MAX_CASE_ELEMENTS) -> None:
    n = case_elements(case)
    if n > limit:
        raise ReproError(
            f"case: about {n:,} tensor elements (~{4 * n / 2**30:.1f} GiB in fp32) exceeds the "
            f"replay limit of {limit:,}; pass --allow-large if you mean it"
        )


def is_builtin(impl: str) -> bool:
    """Names that run only our own code; anything else would import a module or file named in the repro."""
    return impl == "ours" or impl.startswith("mutant:")
