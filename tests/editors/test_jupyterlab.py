"""logitls in the real JupyterLab (jupyterlab-lsp), driven in headless Chromium.

JupyterLab finds logitls as a user's would: through the `jupyter_lsp_spec_v1` entry point in
pyproject.toml (server/logitls/jupyter.py), with nothing configured. The venv's own logitls metadata
may belong to another checkout, so the test puts this checkout's entry points (read from its
pyproject.toml) first on the path, beside its server/ (editor_env). tests/editors/jupyterlab_check.mjs
then presses Tab in a `.txt` file (the completer), Ctrl+hovers in a `.md` file and in a notebook
Markdown cell, and records what JupyterLab showed; its screenshots are the README's JupyterLab
screens (`LOGITLS_SCREENS=DIR` copies them there, e.g. docs/).

Node 24, playwright-core and Chromium come from tests/editors/vscode_e2e_setup.sh (the VS Code test's
set-up); JupyterLab, jupyterlab-lsp and jedi-language-server from the `jupyter` extra. A missing piece
skips these tests, or fails them under LOGITLS_REQUIRE_EDITORS=1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .conftest import ROOT, editor_env, serve_web, stop_process_group

SETUP = ROOT / "tests" / "editors" / "vscode_e2e_setup.sh"
CHECK = ROOT / "tests" / "editors" / "jupyterlab_check.mjs"

NOTEBOOK = {
    "cells": [
        {"cell_type": "markdown", "metadata": {}, "source": ["The capital of France is Paris."]},
        {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": ["x = 1"]},
    ],
    "metadata": {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python", "file_extension": ".py", "mimetype": "text/x-python"},
    },
    "nbformat": 4,
    "nbformat_minor": 5,
}

SETTINGS = {
    # no "would you like news?" toast over the editor
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # JupyterLab drops a provider's answer after 1000 ms; on 2 busy cores a first answer may take longer.
    # The test checks what the menu shows, not the latency (README, Performance: first completion).
    "@jupyterlab/completer-extension/manager": {"providerTimeout": 120000},
}


def _missing(message: str):
    if os.environ.get("LOGITLS_REQUIRE_EDITORS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _paths() -> dict[str, str]:
    proc = subprocess.run(["bash", str(SETUP), "--paths"], capture_output=True, text=True)
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0:
        _missing(f"Node 24, playwright-core or Chromium is not installed (make vscode-e2e-setup installs them): {paths}")
    for module in ("jupyterlab", "jupyterlab_lsp", "jupyter_lsp", "jedi_language_server"):
        if importlib.util.find_spec(module) is None:
            _missing(f"{module} is not installed (pip install -e '.[jupyter]'; make setup does)")
    return paths


def _entry_points_of_this_checkout(folder: Path) -> Path:
    """A dist-info holding this checkout's entry points, to put first on PYTHONPATH."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    info = folder / f"logitls-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: logitls\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
        for group, points in project["entry-points"].items()))
    return folder


def _start_jupyterlab(tmp: Path, env: dict[str, str], workspace: Path):
    return serve_web([sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
                      "--ServerApp.port=0", "--IdentityProvider.token=", "--ServerApp.password=",
                      f"--ServerApp.root_dir={workspace}"],
                     tmp / "jupyterlab.log", r"(http://127\.0\.0\.1:\d+)/lab", "/api/status", "JupyterLab", 180,
                     env=env, cwd=workspace)


@pytest.fixture(scope="module")
def jupyterlab_run(tmp_path_factory):
    paths = _paths()
    tmp = tmp_path_factory.mktemp("jupyterlab")
    workspace = tmp / "notes"
    workspace.mkdir()
    # No newline at the end: jupyterlab-lsp ignores textEdit and inserts at the end of the editor's syntax
    # token at the cursor, which in a plain-text file is the whole file (README, JupyterLab)
    (workspace / "capital.txt").write_text("The capital of France is ")
    (workspace / "capital.md").write_text("# Notes\n\nThe capital of France is Paris.\n")
    (workspace / "notes.ipynb").write_text(json.dumps(NOTEBOOK, indent=1))
    env = editor_env(tmp)
    env["PYTHONPATH"] = os.pathsep.join([str(_entry_points_of_this_checkout(tmp / "entry-points")), env["PYTHONPATH"]])
    # a fresh JupyterLab: its own settings, workspaces and config, none of the user's
    settings = tmp / "lab-settings"
    for plugin, values in SETTINGS.items():
        file = settings / f"{plugin}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    env.update(JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
               JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"), JUPYTER_PLATFORM_DIRS="1")
    out = tmp / "out"
    out.mkdir()
    proc, url = _start_jupyterlab(tmp, env, workspace)
    try:
        check_env = dict(env, LOGITLS_JUPYTERLAB_URL=url, LOGITLS_PLAYWRIGHT=paths["NODE_MODULES"],
                         LOGITLS_CHROMIUM=paths["CHROMIUM"], LOGITLS_TEST_OUT=str(out))
        driver = subprocess.run([paths["NODE"], str(CHECK)], env=check_env, capture_output=True, text=True,
                                timeout=1200)
    finally:
        stop_process_group(proc)
    result_file = out / "result.json"
    assert result_file.exists(), f"the driver wrote nothing (rc {driver.returncode}):\n{driver.stdout}\n{driver.stderr}"
    result = json.loads(result_file.read_text())
    screens = os.environ.get("LOGITLS_SCREENS")
    if screens:
        for png in out.glob("jupyterlab-*.png"):
            if png.name not in ("jupyterlab-error.png", "jupyterlab-accepted.png"):
                shutil.copy(png, Path(screens) / png.name)
    assert "error" not in result, (f"{result['error']}\nsteps: {result['steps']}\nscreens in {out}\n"
                                   f"JupyterLab log: {(tmp / 'jupyterlab.log').read_text()[-3000:]}")
    return result


def test_the_completer_lists_paris_first_with_its_percentage(jupyterlab_run):
    first = jupyterlab_run["completion"][0]
    assert first["label"] == "␣Paris", jupyterlab_run["completion"]
    assert first["detail"].startswith("77.3%"), first  # the percentage leads where the detail is cut
    assert len(jupyterlab_run["completion"]) == 10


def test_accepting_paris_completes_the_sentence(jupyterlab_run):
    # jupyterlab-lsp ignores textEdit: the item's insertText is what lands at the cursor
    assert jupyterlab_run["line_after_accept"] == "The capital of France is Paris"


@pytest.mark.parametrize("where", ["hover_md", "hover_notebook"])
def test_the_hover_over_capital_shows_its_probability_and_rank(jupyterlab_run, where):
    hover = jupyterlab_run[where]
    assert "␣capital" in hover and re.search(r"p = [\d.e-]+ \([\d.<]+%\), rank \d+ of 49152", hover), hover
    assert re.search(r"rank\s+token\s+p", hover), hover  # the alternatives table, rendered
