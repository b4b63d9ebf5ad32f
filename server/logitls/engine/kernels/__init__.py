"""The fp32 GGUF-block kernel (gguf_linear.cpp): built once per torch version and source, then loaded.

`make setup` builds it (`python -m logitls.engine.kernels`). Where it is missing (a wheel install's first
start) and a C++ compiler is there, the first load starts that build as a process of its own and goes on
without it: the weights are exact meanwhile (`weights: auto`; an asked-for `packed` takes torch's int4
kernel, bf16 rounding, and says so), and the next start finds the kernel built. LOGITLS_GGUF_KERNEL=off
switches it off; LOGITLS_GGUF_KERNEL=wait builds it in the load instead (about 5 s; the tests do).
Built portably: no -march, the AVX2 path is picked at run time by the CPU's flags, so a cached build
runs on whichever CPU the next start gets.
"""

from __future__ import annotations

import hashlib
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


def build(target: Path | None = None) -> Path:
    """Compile the kernel into the cache (written whole, then renamed into place); returns its path."""
    from torch.utils.cpp_extension import include_paths

    target = target or library_path()
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (c++ or g++) on PATH")
    torch_lib = Path(torch.__file__).parent / "lib"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".gguf_linear-", suffix=".so", dir=target.parent)
    os.close(fd)
    command = [compiler, *FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
               *(f"-I{p}" for p in include_paths()), str(SOURCE), "-o", staging,
               f"-L{torch_lib}", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{torch_lib}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed:\n{result.stderr[-4000:]}")
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return target


def available() -> bool:
    """Whether torch.ops.logitls.gguf_linear can run here (loading, or first building, the library)."""
    global _loaded, _failure
    if _loaded is not None:
        return _loaded
    if os.environ.get("LOGITLS_GGUF_KERNEL", "").lower() in ("off", "0", "no"):
        _failure, _loaded = "switched off by LOGITLS_GGUF_KERNEL", False
        return False
    path = library_path()
    try:
        if not path.exists():
            if os.environ.get("LOGITLS_GGUF_KERNEL", "").lower() != "wait":
                _failure, _loaded = build_in_background(path), False
                logger.info("%s", _failure)
                return False
            logger.info("building the fp32 GGUF kernel once (a few seconds): %s", path)
            build(path)
        torch.ops.load_library(str(path))
        _loaded = True
    except Exception as error:  # noqa: BLE001 - no compiler, a foreign build: torch's int4 kernel instead
        _failure = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        logger.warning("the fp32 GGUF kernel is unavailable (%s); packed weights use torch's bf16 int4 kernel",
                       _failure)
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
    torch.ops.load_library(str(path))
    print(f"kernel path on this CPU: {torch.ops.logitls.gguf_kernel_path()}")
    return 0

