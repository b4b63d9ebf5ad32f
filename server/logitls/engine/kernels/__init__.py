"""The fp32 GGUF-block kernel (gguf_linear.cpp): built once per torch version and source, then loaded.

`make setup` builds it (`python -m logitls.engine.kernels`). Where it is missing (a wheel install's first
start) and a C++ compiler is there, the first load starts that build as a process of its own and goes on
without it: the weights are exact meanwhile (`weights: auto`; an asked-for `packed` takes torch's int4
kernel, bf16 rounding, and says so), and the next start finds the kernel built. LOGITLS_GGUF_KERNEL=off
switches it off; LOGITLS_GGUF_KERNEL=wait builds it in the load instead (about 5 s; the tests do).
Built portably: no -march, the AVX2 path is picked at run time by the CPU's flags, so a cached build
runs on whichever CPU the next start gets.

A damaged library (a crash during an unsynced write leaves zeros or a cut file) kills the process
that loads it, with SIGSEGV or SIGBUS and no word. So the library is written whole (a temporary file,
fsync, rename), a manifest beside it records its size and SHA-256, and a cached library is checked
against it before loading; the first load of each library happens in a child process. A library that
fails either check is rebuilt; where that fails too, the model's weights stay exact (`weights: auto`)
and one warning says why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

logger = logging.getLogger("logitls.engine")
SOURCE = Path(__file__).with_name("gguf_linear.cpp")
# No -march: the AVX2 functions carry their own target attribute and are chosen at run time.
FLAGS = ("-O3", "-shared", "-fPIC", "-std=c++17", "-fopenmp", "-w")
_loaded: bool | None = None
_failure = ""


def library_path() -> Path:
    from ..cache_dir import cache_root

    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + torch.__version__.encode()).hexdigest()[:16]
    return cache_root() / "kernels" / f"gguf_linear-{key}" / "gguf_linear.so"


def manifest_path(library: Path) -> Path:
    return library.with_name(library.name + ".json")


def _digest(path: Path) -> tuple[int, str]:
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def _write_whole(target: Path, write) -> None:
    """Write a file so that a crash leaves the old one or the new one, never a part: a temporary file
    beside it, fsync, rename, fsync of the folder."""
    fd, staging = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    _sync_folder(target.parent)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system syncs a folder
    finally:
        os.close(fd)


def _record(library: Path, checked: bool) -> None:
    size, sha256 = _digest(library)
    text = json.dumps({"size": size, "sha256": sha256, "checked": checked}).encode()
    _write_whole(manifest_path(library), lambda f: f.write(text))


def _manifest(library: Path) -> dict | None:
    try:
        data = json.loads(manifest_path(library).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def build(target: Path | None = None) -> Path:
    """Compile the kernel into the cache (written whole, then renamed into place, its size and hash
    recorded beside it); returns its path."""
    from torch.utils.cpp_extension import include_paths

    target = target or library_path()
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (c++ or g++) on PATH")
    torch_lib = Path(torch.__file__).parent / "lib"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".gguf_linear-", dir=target.parent) as scratch:
        compiled = Path(scratch) / target.name
        command = [compiler, *FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
                   *(f"-I{p}" for p in include_paths()), str(SOURCE), "-o", str(compiled),
                   f"-L{torch_lib}", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{torch_lib}"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or not compiled.is_file():
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{result.stderr[-4000:]}")
        data = compiled.read_bytes()
    _write_whole(target, lambda f: f.write(data))
    os.chmod(target, 0o755)
    _record(target, checked=False)
    return target


CHECK = ("import sys, torch; torch.ops.load_library(sys.argv[1]); "
         "assert str(torch.ops.logitls.gguf_kernel_path()) in ('avx2', 'plain')")


def _loads_in_a_child(library: Path) -> str:
    """Load the library in a child process: "" when it loads, else why not (a damaged library kills
    the process that loads it, which must not be this one)."""
    try:
        result = subprocess.run([sys.executable, "-c", CHECK, str(library)], capture_output=True, text=True,
                                timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"checking it failed: {type(exc).__name__}"
    if result.returncode == 0:
        return ""
    if result.returncode < 0:
        import signal

        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = f"signal {-result.returncode}"
        return f"loading it killed a process with {name}"
    lines = result.stderr.strip().splitlines()
    return f"loading it failed: {lines[-1][:200] if lines else f'exit status {result.returncode}'}"


def _checked(library: Path) -> str:
    """"" when the cached library may be loaded here; else why it may not."""
    if not library.is_file():
        return "it is not built"
    manifest = _manifest(library)
    if manifest is not None:
        size, sha256 = _digest(library)
        if (manifest.get("size"), manifest.get("sha256")) != (size, sha256):
            return f"the cached library is damaged ({size} bytes, not the {manifest.get('size')} built)"
        if manifest.get("checked") is True:
            return ""
    why = _loads_in_a_child(library)
    if not why:
        _record(library, checked=True)  # a library from before manifests, or a new build: whole, and it loads
    return why


def _ready(path: Path) -> None:
    """Make sure the library at `path` is whole and loads (rebuilding it if not), then load it."""
    why = _checked(path)
    if why:
        if why != "it is not built":
            logger.info("the fp32 GGUF kernel in the cache is unusable (%s): building it again", why)
        else:
            logger.info("building the fp32 GGUF kernel once (a few seconds): %s", path)
        build(path)
        why = _checked(path)
        if why:
            raise RuntimeError(f"the kernel, built afresh, does not load: {why}")
    torch.ops.load_library(str(path))


def available() -> bool:
    """Whether torch.ops.logitls.gguf_linear can run here (checking, or first building, the library)."""
    global _loaded, _failure
    if _loaded is not None:
        return _loaded
    if os.environ.get("LOGITLS_GGUF_KERNEL", "").lower() in ("off", "0", "no"):
        _failure, _loaded = "switched off by LOGITLS_GGUF_KERNEL", False
        return False
    path = library_path()
    try:
        if not path.exists() and os.environ.get("LOGITLS_GGUF_KERNEL", "").lower() != "wait":
            _failure, _loaded = build_in_background(path), False
            logger.info("%s", _failure)
            return False
        _ready(path)
        _loaded = True
    except Exception as error:  # noqa: BLE001 - no compiler, a foreign build: exact weights, or torch's kernel
        _failure = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.warning("the fp32 GGUF kernel is unavailable (%s); weights stay exact (`weights: packed` takes "
                       "torch's bf16 int4 kernel)", _failure)
        _loaded = False
    return _loaded


def build_in_background(path: Path) -> str:
    """Start `python -m logitls.engine.kernels` detached (it outlives a short CLI run); says what happens."""
    if (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")) is None:
        return "no C++ compiler (c++ or g++) on PATH to build it"
    marker = path.parent / ".building"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (marker.exists() and time.time() - marker.stat().st_mtime < 600):  # one build at a time
            marker.touch()
            log = open(path.parent / "build.log", "wb")
            subprocess.Popen([sys.executable, "-m", "logitls.engine.kernels", "--then-remove", str(marker)],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
            log.close()
    except OSError as error:
        return f"it could not be built: {error}"
    return "being built in the background for the next start (exact weights until then)"


def building() -> bool:
    """Whether this process found the kernel missing and started its build."""
    return _loaded is False and _failure.startswith("being built")


def unavailable_reason() -> str:
    return _failure


def cpu_path() -> str:
    """Which of the kernel's code paths this CPU runs: "avx2" or "plain"."""
    return str(torch.ops.logitls.gguf_kernel_path()) if available() else ""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    marker = Path(argv[1]) if argv[:1] == ["--then-remove"] and len(argv) > 1 else None
    try:
        path = build()
    finally:
        if marker is not None and marker.exists():
            marker.unlink()
    print(f"built {path}")
    why = _checked(path)
    if why:
        print(f"the kernel does not load: {why}", file=sys.stderr)
        return 1
    torch.ops.load_library(str(path))
    print(f"kernel path on this CPU: {torch.ops.logitls.gguf_kernel_path()}")
    return 0

