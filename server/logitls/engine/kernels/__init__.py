"""The fp32 GGUF-block kernel (gguf_linear.cpp): built once per torch version and source, then loaded.

`make setup` builds it (`python -m logitls.engine.kernels`); a model loaded with packed weights
builds it on first use if it is missing and a C++ compiler is there (about 5 s), and otherwise falls
back to torch's own int4 kernel (bf16 rounding) and says so. LOGITLS_GGUF_KERNEL=off switches it off
(then `weights: auto` is exact, and `packed` takes torch's kernel). Built portably: no -march, the AVX2 path
is picked at run time by the CPU's flags, so a cached build runs on whichever CPU the next start gets.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
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


def unavailable_reason() -> str:
    return _failure


def cpu_path() -> str:
    """Which of the kernel's code paths this CPU runs: "avx2" or "plain"."""
    return str(torch.ops.logitls.gguf_kernel_path()) if available() else ""


def main() -> int:
    path = build()
    print(f"built {path}")
    torch.ops.load_library(str(path))
    print(f"kernel path on this CPU: {torch.ops.logitls.gguf_kernel_path()}")
    return 0

