"""The shipped Neovim config (client-config/neovim) in the real Neovim, on the embedded model.

Headless: tests/editors/nvim_check.lua runs inside Neovim after `-u client-config/neovim/init.lua`
and records what Neovim itself saw: the completion items as the omnifunc builds them, the hover
float opened by K, the buffer after :LogitlsGenerate, and a :LogitlsRestart. In tmux: the real
completion popup (Insert mode, <C-x><C-o>) on a terminal screen.

Debian 12's Neovim is 0.7.2 (the vim.lsp.start_client path); LOGITLS_EXTRA_NVIM (paths separated
by ':') adds other Neovim binaries, e.g. a 0.11 one for the vim.lsp.config/vim.lsp.enable path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from .conftest import CLIENT, ROOT, editor_env, require_program

INIT = CLIENT / "neovim" / "init.lua"
CHECK = ROOT / "tests" / "editors" / "nvim_check.lua"
TEXT = "The capital of France is\n"


def _binaries():
    extra = [p for p in os.environ.get("LOGITLS_EXTRA_NVIM", "").split(os.pathsep) if p]
    return ["nvim", *extra]


@pytest.fixture(scope="module", params=_binaries())
def nvim_run(request, tmp_path_factory):
    binary = request.param if os.path.sep in request.param else require_program(request.param)
    tmp = tmp_path_factory.mktemp("nvim")
    document = tmp / "capital.txt"
    document.write_text(TEXT)
    out = tmp / "out.json"
    env = editor_env(tmp)
    env["LOGITLS_TEST_OUT"] = str(out)
    proc = subprocess.run([binary, "--headless", "-u", str(INIT), "-c", f"luafile {CHECK}", str(document)],
                          env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.exists(), f"Neovim wrote no result (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(out.read_text())
    assert "error" not in result, result["error"]
    return result


def test_the_server_attaches_and_the_model_gets_ready(nvim_run):
    assert nvim_run["attached"], nvim_run
    assert nvim_run["status"]["state"] == "ready", nvim_run["status"]
    assert nvim_run["status"]["model"] == "default"
    assert nvim_run["statusline"] == "logitls: ready default"
    assert nvim_run["omnifunc"] == "v:lua.require'logitls'.omnifunc"


def test_completion_items_carry_probabilities(nvim_run):
    items = nvim_run["completion"]
    assert len(items) == 10  # topN from the shipped init.lua
    first = items[0]
    assert (first["word"], first["abbr"], first["menu"]) == (" Paris", "␣Paris", "77.3%")
    assert first["info"].startswith("p=0.77") and "rank 1" in first["info"]
    assert all(item["menu"].endswith("%") for item in items)
    assert [float(item["menu"].rstrip("%")) for item in items] == sorted(
        (float(item["menu"].rstrip("%")) for item in items), reverse=True)


def test_hover_on_K_shows_the_token_probability(nvim_run):
    assert nvim_run["k_mapping"]
    hover = "\n".join(nvim_run["hover"])
    assert "`␣is`" in hover and "63.7%" in hover and "rank 1" in hover and "bits" in hover
    assert "| 2 | `,` |" in hover


def test_logitls_generate_changes_the_buffer(nvim_run):
    lines = nvim_run["after_generate"]
    # Normal mode, cursor on the last "s": the continuation goes after it (as `a` appends)
    assert lines[0].startswith("The capital of France is Paris"), lines
    assert lines[0] != TEXT.rstrip("\n")


def test_logitls_restart_brings_a_new_ready_server(nvim_run):
    assert nvim_run["restarted"], nvim_run
    assert nvim_run["events"] == ["ready", "completion", "hover", "generate", "restart"]


def _tmux(socket, *args, check=True):
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, check=check)


def test_completion_popup_on_a_terminal_screen(tmp_path):
    """Insert mode, <C-x><C-o>: Neovim's own popup menu lists the next tokens with probabilities."""
    require_program("tmux")
    nvim = require_program("nvim")
    document = tmp_path / "capital.txt"
    document.write_text(TEXT)
    env = editor_env(tmp_path)
    socket = f"logitls-test-{os.getpid()}"
    statusline = "set laststatus=2 statusline=%f\\ \\ %{v:lua.require'logitls'.statusline()}"
    command = " ".join([nvim, "-u", str(INIT), "-c", f'"{statusline}"', str(document)])
    env_args = [arg for key in ("PATH", "HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
                                "HF_HUB_OFFLINE", "LOGITLS_CACHE_DIR") for arg in ("-e", f"{key}={env[key]}")]
    tmux_env = dict(env, TERM="xterm-256color")
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", "72", "-y", "16", *env_args, command],
                   env=tmux_env, check=True)
    try:
        screen = ""
        deadline = time.monotonic() + 180
        while "logitls: ready" not in screen and time.monotonic() < deadline:
            time.sleep(0.2)
            screen = _tmux(socket, "capture-pane", "-p").stdout
        assert "logitls: ready" in screen, screen
        _tmux(socket, "send-keys", "A")
        time.sleep(0.3)
        _tmux(socket, "send-keys", "C-x", "C-o")
        deadline = time.monotonic() + 60
        while "77.3%" not in screen and time.monotonic() < deadline:
            time.sleep(0.2)
            screen = _tmux(socket, "capture-pane", "-p").stdout
        (tmp_path / "screen.txt").write_text(screen)
        if os.environ.get("LOGITLS_SCREEN_OUT"):
            shutil.copy(tmp_path / "screen.txt", os.environ["LOGITLS_SCREEN_OUT"])
        assert "␣Paris" in screen and "77.3%" in screen, screen
        assert "␣London" in screen and "1.2%" in screen, screen
        assert "-- INSERT --" in screen, screen
    finally:
        _tmux(socket, "kill-server", check=False)
