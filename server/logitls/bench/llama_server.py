"""llama.cpp on the same GGUF, for the greedy goal: llama-cpp-python's server (`python -m llama_cpp.server`),
started by the bench where it is installed, with as many threads as torch uses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def available() -> str | None:
    """None where the server can be started, else why not."""
    try:
        import llama_cpp.server.app  # noqa: F401 - what `python -m llama_cpp.server` needs
    except ImportError as exc:
        return f"llama-cpp-python[server] is not installed ({exc})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """One `python -m llama_cpp.server` on the GGUF, on a free port, for the length of a `with` block."""

    def __init__(self, gguf: Path, threads: int) -> None:
        self.gguf, self.threads = gguf, threads
        self.process: subprocess.Popen | None = None
        self.remote = None

    def __enter__(self) -> "LlamaServer":
        from ..engine.openai_backend import OpenAIBackend

        port = _free_port()
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", str(self.threads), "--verbose", "false"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    tail = self.log.read()[-500:]
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"llama_cpp.server did not start: {tail!r}")
                time.sleep(0.2)
        self.remote = OpenAIBackend.connect(f"http://127.0.0.1:{port}/v1", timeout=600,
                                            notify=lambda level, message: None)
        return self

    def greedy_tok_s(self, prompt: str, new_tokens: int) -> float:
        """Decode tokens/s of the server's streamed greedy continuation of `prompt`: from the first
        streamed token to the last, so that its prompt cache (kept between requests) does not count."""
        from .engine_bench import _decode_rate

        stamps = [time.perf_counter() for step in self.remote.greedy(prompt, max_new_tokens=new_tokens)
                  if step.token.id not in self.remote.eos_ids]
        return _decode_rate(stamps)

    def __exit__(self, *exc: Any) -> None:
        if self.remote is not None:
            self.remote.close()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()
