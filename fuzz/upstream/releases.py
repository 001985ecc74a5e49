"""Released SGLang / vLLM kernels by version: `--impl vllm==0.34.0`, `--impl sglang==0.5.23`.

The release's wheel is found on the package index (pip's configured index, PEP 691 JSON), and only the
kernel's package folder is taken out of it into a cache:

    $MOE_LORA_FUZZ_CACHE (default ~/.cache/moe-lora-fuzz)/<framework>-<version>/
        release.json            which wheel, which member is the kernel, which files were taken
        <package path>/*.py     the kernel file and its siblings, unchanged

A wheel is a zip: its central directory sits at the end, and each member can be read on its own. So the
wheel is read through HTTP range requests against the file URL the index gives (a few hundred KB instead of
~240 MB for vLLM); if the server does not honour ranges, the whole wheel is fetched with `pip download
--no-deps` and read locally. The kernel is found by what it defines (a `def _fused_moe_lora(` next to a
`@triton.jit`), not by a fixed path: it moves between releases. With release.json present nothing touches
the network, so a carried cache works offline. Nothing of a release is ever written outside the cache.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

PROJECTS = {"sglang": "sglang", "vllm": "vllm"}
KERNEL_DEF = re.compile(rb"^def _fused_moe_lora\(", re.M)
MANIFEST = "release.json"
_BLOCK = 1 << 18  # bytes per range request (the central directory and a member usually fit in one or two)


class ReleaseError(Exception):
    """A release cannot be fetched or holds no fused MoE LoRA kernel (one line; the CLI exits 2)."""


@dataclass(frozen=True)
class Release:
    framework: str
    version: str
    root: Path  # the cache folder of this release
    kernel: Path  # the kernel file inside it
    wheel: str  # the wheel's file name

    @property
    def package_dir(self) -> Path:
        return self.kernel.parent

    def package_name(self) -> str:
        """The kernel folder as a dotted package name (`vllm.lora.ops.triton_ops`)."""
        return ".".join(self.package_dir.relative_to(self.root).parts)


def cache_root() -> Path:
    env = os.environ.get("MOE_LORA_FUZZ_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "moe-lora-fuzz"


def _index_urls() -> list[str]:
    """pip's configured http(s) indexes (index-url first), as pip itself would use them."""
    urls = []
    try:
        out = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.split(".")[-1] in ("index-url", "extra-index-url"):
            urls += [u for u in value.strip("'\"").split() if u.startswith("http")]
    env = os.environ.get("PIP_INDEX_URL")
    urls = ([env] if env else []) + urls
    return urls or ["https://pypi.org/simple"]


def _get(url: str, headers: dict | None = None, timeout: float = 60) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"User-Agent": "moe-lora-fuzz", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status, resp.read()


def project_files(framework: str) -> list[dict]:
    """The index's file entries of a framework (PEP 691 JSON), from the first index that answers."""
    errors = []
    for base in _index_urls():
        url = f"{base.rstrip('/')}/{PROJECTS[framework]}/"
        try:
            _status, body = _get(url, {"Accept": "application/vnd.pypi.simple.v1+json"})
            files = json.loads(body)["files"]
        except Exception as e:  # network, HTTP or JSON error: try the next index
            errors.append(f"{url}: {type(e).__name__}: {e}")
            continue
        for f in files:
            f["url"] = urllib.parse.urljoin(url, f["url"])
        return files
    raise ReleaseError(f"cannot list {framework} releases on the package index ({'; '.join(errors)})")


def _wheel_version(filename: str) -> str:
    return filename.split("-")[1]


def released_versions(framework: str) -> list[str]:
    """Every version with a wheel on the index, newest first (yanked ones left out)."""
    from packaging.version import InvalidVersion, Version

    seen = set()
    for f in project_files(framework):
        if f["filename"].endswith(".whl") and not f.get("yanked"):
            seen.add(_wheel_version(f["filename"]))
    good = []
    for v in seen:
        try:
            good.append((Version(v), v))
        except InvalidVersion:
            continue
    return [v for _, v in sorted(good, reverse=True)]


def _pick_wheel(framework: str, version: str) -> dict:
    wheels = [
        f
        for f in project_files(framework)
        if f["filename"].endswith(".whl") and _wheel_version(f["filename"]) == version and not f.get("yanked")
    ]
    if not wheels:
        raise ReleaseError(f"{framework}=={version}: no wheel of that version on the package index")

    def rank(f):  # the kernel is pure Python, any wheel has it; prefer this machine's kind, then the smallest
        name = f["filename"]
        return ("x86_64" not in name and not name.endswith("-any.whl"), f.get("size") or 0)

    return min(wheels, key=rank)


class _RangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests (enough for zipfile)."""

    def __init__(self, url: str, size: int):
        self.url, self.size, self.pos, self.requests = url, size, 0, 0
        self._blocks: dict[int, bytes] = {}

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, offset, whence=0):
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def _block(self, i: int) -> bytes:
        if i not in self._blocks:
            start, end = i * _BLOCK, min(self.size, (i + 1) * _BLOCK) - 1
            status, body = _get(self.url, {"Range": f"bytes={start}-{end}"})
            self.requests += 1
            if status != 206 or len(body) != end - start + 1:
                raise ReleaseError(f"{self.url}: the server does not answer range requests (HTTP {status})")
            self._blocks[i] = body
        return self._blocks[i]

    def read(self, n=-1):
        end = self.size if n is None or n < 0 else min(self.size, self.pos + n)
        out = bytearray()
        while self.pos < end:
            i, off = divmod(self.pos, _BLOCK)
            chunk = self._block(i)[off : off + end - self.pos]
            out += chunk
            self.pos += len(chunk)
        return bytes(out)

    def readinto(self, b):
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _is_kernel(text: bytes) -> bool:
    return bool(KERNEL_DEF.search(text)) and b"@triton.jit" in text


def _find_kernel(zf: zipfile.ZipFile, framework: str) -> str | None:
    """The member that defines `_fused_moe_lora` and a Triton kernel; only files named like one are read."""
    names = [
        n
        for n in zf.namelist()
        if n.startswith(f"{framework}/") and n.endswith(".py") and "lora" in n and "moe" in n.rsplit("/", 1)[-1]
    ]
    for name in sorted(names, key=lambda n: ("fused" not in n, len(n))):
        if _is_kernel(zf.read(name)):
            return name
    return None


def _extract(zf: zipfile.ZipFile, framework: str, version: str, wheel: str, dest: Path) -> Release:
    kernel = _find_kernel(zf, framework)
    if kernel is None:
        raise ReleaseError(f"{framework}=={version}: wheel {wheel} ships no fused MoE LoRA kernel (_fused_moe_lora)")
    folder = kernel.rsplit("/", 1)[0] + "/"
    members = [n for n in zf.namelist() if n.startswith(folder) and "/" not in n[len(folder) :] and n.endswith(".py")]
    tmp = Path(tempfile.mkdtemp(prefix=f".{framework}-{version}-", dir=dest.parent))
    for n in members:
        target = tmp / n
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(n))
    (tmp / MANIFEST).write_text(
        json.dumps(dict(framework=framework, version=version, wheel=wheel, kernel=kernel, files=members), indent=1)
    )
    try:
        tmp.rename(dest)  # atomic: a half-written release is never seen as cached
    except OSError:  # another process cached it first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / MANIFEST).is_file():
            raise
    return cached(framework, version)


def cached(framework: str, version: str) -> Release | None:
    """The release if it is in the cache (no network), else None."""
    root = cache_root() / f"{framework}-{version}"
    try:
        meta = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return Release(framework, version, root, root / meta["kernel"], meta["wheel"])


def _pip_download(framework: str, version: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="moe-lora-fuzz-wheel-"))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(tmp)]
    done = subprocess.run(cmd + [f"{PROJECTS[framework]}=={version}"], capture_output=True, text=True)
    wheels = list(tmp.glob("*.whl"))
    if done.returncode or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise ReleaseError(f"{framework}=={version}: pip download failed: {last}")
    return wheels[0]


def fetch(framework: str, version: str, log=None) -> Release:
    """The release from the cache, or fetched into it (range requests, `pip download` as fallback)."""
    if framework not in PROJECTS:
        raise ReleaseError(f"framework: must be one of {', '.join(PROJECTS)} (got {framework!r})")
    hit = cached(framework, version)
    if hit is not None:
        return hit
    dest = cache_root() / f"{framework}-{version}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    wheel = _pick_wheel(framework, version)
    try:
        remote = _RangeFile(wheel["url"], int(wheel["size"]))
        with zipfile.ZipFile(io.BufferedReader(remote, buffer_size=_BLOCK)) as zf:
            release = _extract(zf, framework, version, wheel["filename"], dest)
        if log:
            log(f"{framework}=={version}: {remote.requests} range request(s) on {wheel['filename']}")
        return release
    except ReleaseError as e:
        if "range" not in str(e):
            raise
        if log:
            log(f"{e}; falling back to pip download")
    path = _pip_download(framework, version)
    try:
        with zipfile.ZipFile(path) as zf:
            return _extract(zf, framework, version, path.name, dest)
    finally:
        path.unlink(missing_ok=True)
        path.parent.rmdir()
