"""Every editor harness waits generously: on a busy machine (the suite beside other work) a request
can take as long as a model load, and eglot's default (jsonrpc's 10 s) ended every Emacs test with
"Timed out". A wait is a limit against a hang, not an assertion: each returns as soon as its
condition holds, so a long one costs nothing when the machine is idle."""

from __future__ import annotations

import re

from .conftest import ROOT

EDITORS = ROOT / "tests" / "editors"
GENEROUS_S = 600


def test_emacs_requests_and_connection_wait_generously():
    text = (EDITORS / "emacs_check.el").read_text()
    for variable in ("jsonrpc-default-request-timeout", "eglot-connect-timeout"):
        found = re.search(rf"\b{variable}\s+(\d+)", text)
        assert found and int(found.group(1)) >= GENEROUS_S, variable
    waits = [int(s) for s in re.findall(r"\(logitls-check-wait .*\) (\d+)\)", text)]
    assert waits and min(waits) >= GENEROUS_S


def test_neovim_waits_generously():
    text = (EDITORS / "nvim_check.lua").read_text()
    assert int(re.search(r"local WAIT_MS = (\d+)", text).group(1)) >= GENEROUS_S * 1000
    # no wait with a number of its own: vim.wait, buf_request_sync and the harness's `when`
    assert not re.findall(r"vim\.wait\(\d|buf_request_sync\([^)]*\d+\)|end, \d+, function", text)


def test_vscode_waits_generously():
    text = (EDITORS / "vscode_check.mjs").read_text()
    assert int(re.search(r"const MODEL_TIMEOUT = ([\d_]+);", text).group(1).replace("_", "")) >= GENEROUS_S * 1000
    assert int(re.search(r"const UI_TIMEOUT = ([\d_]+);", text).group(1).replace("_", "")) >= 120_000
    # (a hover is asked again every 15 s until MODEL_TIMEOUT: a retry, not a limit)
