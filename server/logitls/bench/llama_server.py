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
        import llama_cpp.server.app  # noqa: F401
    except ImportError as exc:
        return f"llama-cpp-python[server] is not installed ({exc})"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def greedy_rate(gguf: Path, prompt: str, new_tokens: int, threads: int, repeats: int = 2) -> dict[str, Any]:
    """Tokens/s of the server's streamed greedy continuation of `prompt` (best of `repeats`)."""
    from ..engine.openai_backend import OpenAIBackend

    port = _free_port()
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "2048", "--n_threads", str(threads), "--verbose", "false"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"llama_cpp.server did not start: {log.read()[-500:]!r}")
                time.sleep(0.2)
        remote = OpenAIBackend.connect(url, timeout=600, notify=lambda level, message: None)
        rates = []
        try:
            for _ in range(repeats):
                started = time.perf_counter()
                count = sum(1 for step in remote.greedy(prompt, max_new_tokens=new_tokens)
                            if step.token.id not in remote.eos_ids)
                rates.append(count / (time.perf_counter() - started))
        finally:
            remote.close()
        return {"tok_s": max(rates), "tokens": count}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
