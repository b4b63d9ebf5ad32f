"""Helpers for the tests that drive real editors (Neovim, Emacs) with the shipped client-config.

An editor that is not installed skips its tests, unless LOGITLS_REQUIRE_EDITORS=1 (set by
`make test`, whose `editors-setup` installs them): then a missing editor fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "client-config"


def require_program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (make editors-setup installs it)"
        if os.environ.get("LOGITLS_REQUIRE_EDITORS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


FRANCE = "The capital of France is Paris. It is big."


def london_branch(engine) -> str:
    """FRANCE after choosing ` London` for ` Paris` and continuing to the line's end, as the branch
    code action the editors are driven through does."""
    from logitls.engine.branch import continue_branch

    start = FRANCE.index(" Paris")
    branch = continue_branch(engine, FRANCE, start, start + len(" Paris"), " London", until="line", max_new_tokens=64)
    return FRANCE[:start] + branch.new_text


def editor_env(tmp_path: Path) -> dict[str, str]:
    """The environment an editor runs in: `logitls` from this interpreter's venv first on PATH,
    running this checkout's server (server/ first on PYTHONPATH: the venv's `logitls` may be an
    editable install of another checkout), the hub offline, and a private HOME so no user config
    leaks in."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1",
               HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
               XDG_STATE_HOME=str(home / ".local/state"),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "server"), env.get("PYTHONPATH")) if p))
    # the converted default model lives in the real cache; keep using it (not the private HOME)
    env.setdefault("LOGITLS_CACHE_DIR", os.environ.get("LOGITLS_CACHE_DIR")
                   or str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "logitls"))
    return env


def serve_web(command: list[str], log_path: Path, url_pattern: str, health: str, name: str, start_seconds: float,
              **popen) -> tuple[subprocess.Popen, str]:
    """Start a web server (code-server, JupyterLab) in its own process group, its output in `log_path`;
    wait for `url_pattern` (one group: the base URL) in the log and for `health` under it to answer.
    Returns the process and its base URL; stops it and fails the test where it does not come up."""
    with log_path.open("w") as log:
        # its own process group: what it starts (an extension host, a kernel, logitls) goes with it
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **popen)
    try:
        deadline = time.monotonic() + start_seconds
        while time.monotonic() < deadline and proc.poll() is None:
            found = re.search(url_pattern, log_path.read_text())
            if found:
                urllib.request.urlopen(found.group(1) + health, timeout=30).read()
                return proc, found.group(1)
            time.sleep(0.1)  # polling a log file for the port; not a wait for the model
    except BaseException:
        stop_process_group(proc)
        raise
    stop_process_group(proc)
    pytest.fail(f"{name} did not start:\n{log_path.read_text()}")


def stop_process_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
