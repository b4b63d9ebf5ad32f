"""Helpers for the tests that drive real editors (Neovim, Emacs) with the shipped client-config.

An editor that is not installed skips its tests, unless LOGITLS_REQUIRE_EDITORS=1 (set by
`make test`, whose `editors-setup` installs them): then a missing editor fails the test.
"""

from __future__ import annotations

import os
import shutil
import sys
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
