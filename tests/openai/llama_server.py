"""A real llama.cpp server for the tests: llama-cpp-python's `python -m llama_cpp.server` serving the
embedded default GGUF on 127.0.0.1 and a free port. `make test` installs `llama-cpp-python[server]`
(its own stamp); without it these tests skip, saying so."""

from __future__ import annotations

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

    def start(self, timeout: float = 120) -> "LlamaServer":
        log = open(self.log, "ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.process.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/models", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"llama_cpp.server did not answer within {timeout} s: {self.log.read_text()[-2000:]}")

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
