"""Repro files: versioned JSON (never pickle), validated field by field on load, written atomically."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .case import Case
from .oracle import KINDS, Verdict

SCHEMA = "moe-lora-fuzz-repro"
VERSION = 1


class ReproError(ValueError):
    """A repro file that cannot be used; the message names the field (exit 2)."""


@dataclass(frozen=True)
class Repro:
    case: Case
    impl: str
    device: str
    verdict: Verdict
    environment: dict

    def command(self, path: str) -> str:
        return f"python -m fuzz replay {path} --impl {self.impl} --device {self.device}"

    def to_dict(self, path: str = "FILE") -> dict:
        return {"schema": SCHEMA, "version": VERSION, "impl": self.impl, "device": self.device,
                "case": self.case.to_dict(), "verdict": self.verdict.to_dict(), "environment": self.environment,
                "replay": self.command(path)}


def environment() -> dict:
    import numpy
    import torch
    import triton
    env = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
           "numpy": numpy.__version__, "cuda": torch.version.cuda, "gpu": None, "driver": None}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        try:
            import subprocess
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            pass
    return env


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save(repro: Repro, path: Path) -> None:
    write_atomic(path, json.dumps(repro.to_dict(str(path)), indent=2, sort_keys=True) + "\n")


def _field(d: dict, name: str, typ: type, where: str = ""):
    if name not in d:
        raise ReproError(f"{where}{name}: missing")
    v = d[name]
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is not bool):
        raise ReproError(f"{where}{name}: wrong type {type(v).__name__}, expected {typ.__name__}")
    return v


def _verdict(d) -> Verdict:
    if not isinstance(d, dict):
        raise ReproError("verdict: expected an object")
    kind = _field(d, "kind", str, "verdict.")
    if kind != "pass" and kind not in KINDS:
        raise ReproError(f"verdict.kind: unknown kind {kind!r}")
    worst = d.get("worst", [])
    if not isinstance(worst, list):
        raise ReproError("verdict.worst: wrong type")
    numbers = {}
    for name in ("max_ratio", "seconds"):
        v = d.get(name, 0.0)
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise ReproError(f"verdict.{name}: wrong type {type(v).__name__}, expected a number")
        numbers[name] = float(v)
    message = d.get("message", "")
    if not isinstance(message, str):
        raise ReproError(f"verdict.message: wrong type {type(message).__name__}, expected str")
    features = d.get("features", [])
    if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
        raise ReproError("verdict.features: expected a list of strings")
    return Verdict(kind, _field(d, "impl", str, "verdict."), _field(d, "signature", str, "verdict."),
                   message, numbers["max_ratio"], worst, numbers["seconds"], features)


def parse(text: str) -> Repro:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReproError(f"not valid JSON (truncated?): {e}") from None
    except RecursionError:
        raise ReproError("not a repro file: JSON nested too deeply") from None
    if not isinstance(d, dict):
        raise ReproError("top level: expected a JSON object")
    if d.get("schema") != SCHEMA:
        raise ReproError(f"schema: expected {SCHEMA!r}, got {d.get('schema')!r}")
    version = d.get("version")
    if type(version) is not int or version != VERSION:
        raise ReproError(f"version: unsupported schema version {version!r} (this build reads {VERSION})")
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
    return Repro(case, impl, device, _verdict(_field(d, "verdict", dict)), env)


def load(path) -> Repro:
    """Parse a repro file; every error names the file and then the field."""
    try:
        return parse(Path(path).read_text())
    except OSError as e:
        raise ReproError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ReproError(f"{path}: not a text file") from None
    except ReproError as e:
        raise ReproError(f"{path}: {e}") from None
