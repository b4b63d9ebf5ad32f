"""Real llama.cpp servers for the tests, serving the embedded default GGUF on 127.0.0.1 and a free port:
llama-cpp-python's `python -m llama_cpp.server` (`make test` installs `llama-cpp-python[server]`, its
own stamp) and llama.cpp's own `llama-server` (`make llama-server` builds it from the same sdist;
`make test` passes its path in LOGITLS_LLAMA_SERVER). Without them these tests skip, saying so,
except under `make test`, where a missing llama-server binary fails them."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

PACKAGE = "llama-cpp-python[server]==0.3.36"


def require_llama_cpp_server() -> None:
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"{PACKAGE} is not installed ({exc}); `make test` installs it")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """One `python -m llama_cpp.server` process; kill() and start() again on the same port."""

    def __init__(self, gguf: Path, port: int | None = None) -> None:
        self.gguf, self.port = gguf, port or free_port()
        self.process: subprocess.Popen | None = None
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"logitls-llama-server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        # The command line; echo with logprobs works without --logits_all in 0.3.36.
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
                "--port", str(self.port), "--n_ctx", "4096", "--verbose", "false"]

    name = "llama_cpp.server"

    def start(self, timeout: float = 120) -> "LlamaServer":
        log = open(self.log, "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"{self.name} did not answer within {timeout} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None


def default_gguf() -> Path:
    from logitls.engine.loading import default_gguf as find

    return Path(find())


@pytest.fixture(scope="session")
def llama_server():
    require_llama_cpp_server()
    server = LlamaServer(default_gguf()).start()
    yield server
    server.kill()


def llama_server_binary() -> Path:
    """The `llama-server` that `make llama-server` built (cached by version and flags)."""
    named = os.environ.get("LOGITLS_LLAMA_SERVER")
    if named:
        if not Path(named).is_file():
            pytest.fail(f"LOGITLS_LLAMA_SERVER={named} does not exist: `make llama-server` builds it")
        return Path(named)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    built = sorted(glob.glob(str(cache / "logitls" / "llama-server-0.3.36-*" / "llama-server")))
    if not built:
        pytest.skip("no llama-server built here; `make llama-server` builds it (minutes, once)")
    return Path(built[-1])


class LlamaCppServer(LlamaServer):
    """llama.cpp's own server: one slot, so that `cache_prompt` keeps the last prompt of every request."""

    name = "llama-server"

    def __init__(self, binary: Path, gguf: Path, port: int | None = None) -> None:
        super().__init__(gguf, port)
        self.binary = binary

    def command(self) -> list[str]:
        return [str(self.binary), "--model", str(self.gguf), "--host", "127.0.0.1", "--port", str(self.port),
                "--ctx-size", "4096", "--parallel", "1", "--threads", "2"]


@pytest.fixture(scope="session")
def llama_cpp_server():
    server = LlamaCppServer(llama_server_binary(), default_gguf()).start()
    yield server
    server.kill()
