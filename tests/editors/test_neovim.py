"""The shipped Neovim config (client-config/neovim) in the real Neovim, on the embedded model.

Headless: tests/editors/nvim_check.lua runs inside Neovim after `-u client-config/neovim/init.lua`
and records what Neovim itself saw: the completion items as the omnifunc builds them, the hover
float opened by K, the buffer after :LogitlsGenerate, the branch code actions (vim.lsp.buf.code_action)
and the buffer after one of them, a :LogitlsRestart, and then, typed as a user
types them, <C-x><C-o> and <C-n><C-y> after `…is `, `…is Pa` and `…is`: the popup's items and the
line once the first is accepted. In tmux: the real completion popup on a terminal screen (the
README's), and the line after accepting its first item; the branch menu, the hover float (entropy,
top-two margin) and :'<,'>LogitlsScoreSelection's message, each a README screen. Headless without a
server: the range :LogitlsScoreSelection sends for a Visual selection.

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

from .conftest import CLIENT, FRANCE, ROOT, editor_env, london_branch, require_program

INIT = CLIENT / "neovim" / "init.lua"
CHECK = ROOT / "tests" / "editors" / "nvim_check.lua"
TEXT = "The capital of France is\n"
PARIS = "The capital of France is Paris"


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
                          env=env, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
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


def test_the_menu_starts_where_the_edit_starts(nvim_run):
    """complete()'s start column is the items' textEdit start converted to bytes (UTF-16 by default);
    an empty range at the cursor (raw next tokens) or no textEdit inserts at the cursor."""
    synthetic = nvim_run["synthetic"]
    fragment_start = len("naïve 😀".encode())  # the byte column of " Pa" in "naïve 😀 Pa"
    for encoding in ("utf16", "utf32", "utf8"):
        assert synthetic[encoding] == {"start": fragment_start, "words": [" Paris"]}, encoding
    assert synthetic["raw"] == {"start": synthetic["line_bytes"], "words": [" x"]}
    assert synthetic["mixed"] == {"start": fragment_start, "words": [" Paris", " Paris", " Pa!"]}


def test_completion_items_carry_probabilities(nvim_run):
    items = nvim_run["completion"]
    assert len(items) == 10  # topN from the shipped init.lua
    first = items[0]
    # token healing: the items replace ` is` (from byte column 21) with ` is` + the next token
    assert nvim_run["completion_start"] == len("The capital of France")
    assert (first["word"], first["abbr"], first["menu"]) == (" is Paris", "␣Paris", "77.3%")
    assert first["info"].startswith("77.3%  p=0.77") and "rank 1" in first["info"]
    assert all(item["word"].startswith(" is") for item in items)
    assert all(item["menu"].endswith("%") for item in items)
    assert [float(item["menu"].rstrip("%")) for item in items] == sorted(
        (float(item["menu"].rstrip("%")) for item in items), reverse=True)


@pytest.mark.parametrize("text, fragment, word", [("The capital of France is ", " ", " Paris"),
                                                  ("The capital of France is Pa", " Pa", " Paris"),
                                                  ("The capital of France is", " is", " is Paris")])
def test_accepting_the_first_item_completes_what_was_typed(nvim_run, text, fragment, word):
    """<C-x><C-o>, <C-n>, <C-y> in Insert mode: the first item is Paris and the line reads `…is Paris`
    (not `…is  Paris` nor `…is Pais`): complete() replaces the space or half-typed word."""
    menu = next(m for m in nvim_run["menus"] if m["text"] == text)
    assert menu["shown"], menu
    assert len(menu["items"]) == 10, menu
    assert menu["items"][0] == {"word": word, "abbr": "␣Paris", "menu": "77.3%"}, menu["items"][:3]
    assert all(item["word"].startswith(fragment) for item in menu["items"]), menu["items"]
    assert menu["line"] == PARIS, menu


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


def test_branch_code_actions_replace_paris_and_continue(nvim_run, default_engine):
    """vim.lsp.buf.code_action() on ` Paris`: the menu offers the other tokens the hover lists; the
    ` London` one runs logitls.branch, which rewrites the rest of the line; one `u` restores it."""
    menu = nvim_run["branch_menu"]
    assert "Use ' the' (6.5%) and continue" in menu and "Use ' London' (1.2%) and continue" in menu, menu
    assert not any("Paris" in title for title in menu), menu
    assert nvim_run["after_branch"] == [london_branch(default_engine)], nvim_run["after_branch"]
    assert nvim_run["after_branch_undo"] == [FRANCE]


def test_logitls_restart_brings_a_new_ready_server(nvim_run):
    assert nvim_run["restarted"], nvim_run
    assert nvim_run["events"] == ["ready", "completion", "hover", "generate", "branch", "restart", "menu"]


def _tmux(socket, *args, check=True):
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, check=check)


def _screen_until(socket, done, seconds):
    screen = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        screen = _tmux(socket, "capture-pane", "-p").stdout
        if done(screen):
            break
        time.sleep(0.2)
    return screen


def _accept_first_and_save(socket, document):
    """<C-n> selects (and inserts) the first item, <C-y> accepts it, <Esc>, :w; the file's text.
    The file, not the screen, tells what the line reads (the screen also shows hints after it)."""
    before = document.stat().st_mtime_ns
    _tmux(socket, "send-keys", "C-n", "C-y", "Escape")
    _screen_until(socket, lambda s: "INSERT" not in s, 20)
    _tmux(socket, "send-keys", ":w", "Enter")
    deadline = time.monotonic() + 20
    while document.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)  # the write has finished
    return document.read_text()


def test_completion_popup_on_a_terminal_screen(tmp_path):
    """Insert mode after `…is `, <C-x><C-o>: Neovim's own popup menu lists the next tokens with
    probabilities, Paris first; <C-n><C-y> makes the line `…is Paris`. Then the same after `…is Pa`.
    The first screen is the README's (LOGITLS_SCREEN_OUT=path keeps a copy)."""
    require_program("tmux")
    document = tmp_path / "notes.txt"
    document.write_text("The capital of France is \n")
    socket = f"logitls-test-{os.getpid()}"
    try:
        _start_in_tmux(socket, tmp_path, document, 72, 16)
        _tmux(socket, "send-keys", "A")
        time.sleep(0.3)
        _tmux(socket, "send-keys", "C-x", "C-o")
        screen = _screen_until(socket, lambda s: "77.3%" in s, 60)
        _keep(tmp_path, screen, "LOGITLS_SCREEN_OUT")
        lines = screen.splitlines()
        assert "The capital of France is" in lines[0], screen  # the lens's sign column may come first
        menu = [line for line in lines if "%" in line]
        assert "␣Paris" in menu[0] and "77.3%" in menu[0], screen
        assert "␣London" in screen and "1.2%" in screen, screen
        assert "-- INSERT --" in screen, screen
        assert _accept_first_and_save(socket, document) == PARIS + "\n"

        # a half-typed word: S (substitute the line), `…is Pa`, <C-x><C-o>, <C-n><C-y>
        _tmux(socket, "send-keys", "S")
        _tmux(socket, "send-keys", "-l", "The capital of France is Pa")
        time.sleep(0.3)
        _tmux(socket, "send-keys", "C-x", "C-o")
        screen = _screen_until(socket, lambda s: "77.3%" in s, 60)
        menu = [line for line in screen.splitlines() if "%" in line]
        assert menu and "␣Paris" in menu[0] and "77.3%" in menu[0], screen
        assert "The capital of France is Pa" in screen.splitlines()[0], screen  # a sign column may come
        assert _accept_first_and_save(socket, document) == PARIS + "\n"
    finally:
        _tmux(socket, "kill-server", check=False)


def test_branch_menu_on_a_terminal_screen(tmp_path, default_engine):
    """Normal mode on ` Paris`, :lua vim.lsp.buf.code_action(): Neovim's own menu (0.7: inputlist)
    lists "Use ' the' (6.5%) and continue" and the others; choosing ` London` rewrites the rest of the
    line. The README's screen (LOGITLS_BRANCH_SCREEN_OUT=path keeps a copy)."""
    require_program("tmux")
    document = tmp_path / "notes.txt"
    document.write_text(FRANCE + "\n")
    socket = f"logitls-branch-{os.getpid()}"
    try:
        _start_in_tmux(socket, tmp_path, document, 72, 12)
        _tmux(socket, "send-keys", "0", "f", "P")  # the cursor on ` Paris`
        _tmux(socket, "send-keys", ":lua vim.lsp.buf.code_action()", "Enter")
        screen = _screen_until(socket, lambda s: "Type number" in s, 60)
        _keep(tmp_path, screen, "LOGITLS_BRANCH_SCREEN_OUT")
        assert "1: Use ' the' (6.5%) and continue" in screen, screen
        assert "2: Use ' London' (1.2%) and continue" in screen, screen
        before = document.stat().st_mtime_ns
        _tmux(socket, "send-keys", "2", "Enter")
        expected = london_branch(default_engine)
        _screen_until(socket, lambda s: s.splitlines()[0].startswith(expected), 60)
        _tmux(socket, "send-keys", ":w", "Enter")
        deadline = time.monotonic() + 20
        while document.stat().st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        assert document.read_text() == expected + "\n"
    finally:
        _tmux(socket, "kill-server", check=False)


def _start_in_tmux(socket, tmp_path, document, width, height, options=""):
    """The shipped config in Neovim in a tmux session of width x height, the statusline showing the
    server's state (and `:set options`); waits until the model is ready and returns that screen."""
    nvim = require_program("nvim")
    env = editor_env(tmp_path)
    statusline = f"set {options} laststatus=2 statusline=%f\\ \\ %{{v:lua.require'logitls'.statusline()}}"
    command = " ".join([nvim, "-u", str(INIT), "-c", f'"{statusline}"', document.name])
    env_args = [arg for key in ("PATH", "PYTHONPATH", "HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME",
                                "HF_HUB_OFFLINE", "LOGITLS_CACHE_DIR") for arg in ("-e", f"{key}={env[key]}")]
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-x", str(width), "-y", str(height),
                    "-c", str(tmp_path), *env_args, command], env=dict(env, TERM="xterm-256color"), check=True)
    screen = _screen_until(socket, lambda s: "logitls: ready" in s, 180)
    assert "logitls: ready" in screen, screen
    return screen


def _keep(tmp_path, screen, variable):
    (tmp_path / "screen.txt").write_text(screen)
    if os.environ.get(variable):
        shutil.copy(tmp_path / "screen.txt", os.environ[variable])


def test_hover_float_on_a_terminal_screen(tmp_path):
    """Normal mode on ` Paris` of `The capital of France is Paris.`, K: Neovim's hover float shows the
    token's probability, rank and bits, how unsure the model was there (entropy, top-two margin) and
    the table of the tokens it preferred. The README's screen (LOGITLS_HOVER_SCREEN_OUT=path keeps a copy)."""
    require_program("tmux")
    document = tmp_path / "notes.txt"
    document.write_text("The capital of France is Paris.\n")
    socket = f"logitls-hover-{os.getpid()}"
    try:
        _start_in_tmux(socket, tmp_path, document, 90, 16)
        _tmux(socket, "send-keys", "0", "f", "P", "K")
        screen = _screen_until(socket, lambda s: "margin" in s and "| 3 |" in s, 60)
        _keep(tmp_path, screen, "LOGITLS_HOVER_SCREEN_OUT")
        assert "␣Paris" in screen and "77.3%" in screen and "rank 1" in screen and "bits" in screen, screen
        assert "entropy" in screen and "margin" in screen, screen
        assert "␣London" in screen and "1.2%" in screen, screen
    finally:
        _tmux(socket, "kill-server", check=False)


def test_score_selection_on_a_terminal_screen(tmp_path, default_engine):
    """Visual mode over `Paris. It is big.`, :'<,'>LogitlsScoreSelection: the server's message on the
    message line gives bits per token, perplexity and the least likely token, the numbers
    `logitls score` prints for the same characters. The README's screen
    (LOGITLS_SCORE_SCREEN_OUT=path keeps a copy)."""
    from logitls.lens import score_selection, selection_summary

    require_program("tmux")
    document = tmp_path / "notes.txt"
    document.write_text(FRANCE + "\n")
    socket = f"logitls-score-{os.getpid()}"
    try:
        _start_in_tmux(socket, tmp_path, document, 90, 8, "cmdheight=2")
        _tmux(socket, "send-keys", "0", "f", "P", "v", "$")
        _tmux(socket, "send-keys", ":")  # Visual mode's `:` puts '<,'> on the command line
        time.sleep(0.2)
        _tmux(socket, "send-keys", "-l", "LogitlsScoreSelection")
        _tmux(socket, "send-keys", "Enter")
        screen = _screen_until(socket, lambda s: "bits/token" in s, 60)
        _keep(tmp_path, screen, "LOGITLS_SCORE_SCREEN_OUT")
        assert "bits/token" in screen and "perplexity" in screen and "least likely" in screen, screen
        text = FRANCE + "\n"
        start = FRANCE.index("Paris")
        expected = selection_summary(score_selection(text, default_engine.document_scores(text), start,
                                                     len(FRANCE)), text)
        assert expected in "".join(screen.splitlines()[-2:]), (expected, screen)  # the message may wrap
    finally:
        _tmux(socket, "kill-server", check=False)


SELECTION_CHECK = r"""
vim.opt.runtimepath:prepend(CLIENT_DIR)
local M = require("logitls")
vim.api.nvim_buf_set_lines(0, 0, -1, false, { "naïve 😀 Paris.", "second line" })
local out = {}
vim.cmd("normal! 0fPv$\27")
out.charwise16 = M.selection_range(0, 1, 1, "utf-16")
out.charwise8 = M.selection_range(0, 1, 1, "utf-8")
out.charwise32 = M.selection_range(0, nil, nil, "utf-32")
out.lines = M.selection_range(0, 1, 2, "utf-16") -- :1,2 with the marks on line 1 only
vim.cmd("normal! ggVj\27")
out.linewise = M.selection_range(0, 1, 2, "utf-16")
vim.fn.writefile({ vim.fn.json_encode(out) }, OUT)
vim.cmd("qall!")
"""


def test_the_selection_range_is_the_visual_selection_in_the_client_encoding(tmp_path):
    """:'<,'>LogitlsScoreSelection's range: from '< to just after the character at '> (UTF-16 by
    default), whole lines for a linewise selection or a line range the marks are not on."""
    nvim = require_program("nvim")
    out = tmp_path / "out.json"
    script = tmp_path / "selection.lua"
    script.write_text(f"local CLIENT_DIR, OUT = {json.dumps(str(ROOT))}, {json.dumps(str(out))}\n"
                      + SELECTION_CHECK)
    subprocess.run([nvim, "--headless", "-u", "NONE", "-c", f"luafile {script}"], env=editor_env(tmp_path),
                   capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    result = json.loads(out.read_text())

    def span(line1, char1, line2, char2):
        return {"start": {"line": line1, "character": char1}, "end": {"line": line2, "character": char2}}

    # `Paris.` after `naïve 😀 `: UTF-16 columns 9-15 (😀 is a surrogate pair), bytes 12-18, code points 8-14
    assert result["charwise16"] == span(0, 9, 0, 15)
    assert result["charwise8"] == span(0, 12, 0, 18)
    assert result["charwise32"] == span(0, 8, 0, 14)
    assert result["lines"] == span(0, 0, 1, 11)
    assert result["linewise"] == span(0, 0, 1, 11)
