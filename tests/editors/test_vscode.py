"""The VS Code extension (client-config/vscode) in the real VS Code: code-server in headless Chromium.

The extension is packaged from this checkout (esbuild bundle, vsce), installed into a fresh profile
(temporary user-data, extensions and XDG folders), and pointed at this checkout's server through
`logitls.server.venv` in the Remote settings, where a code-server user must set it (the venv's bin/
is not on PATH: the setting must find it). tests/editors/vscode_check.mjs then drives one
workbench session with the keyboard, the command palette and the menus, as a user would, and
records what the workbench showed; the tests below assert on that record. Its screenshots are the README's VS Code screens (`LOGITLS_SCREENS=DIR`
copies them there, e.g. docs/).

What it needs besides the repository (Node 24, code-server, playwright-core, Debian's Chromium) is
installed by tests/editors/vscode_e2e_setup.sh (`make vscode-e2e-setup`, part of `make test`),
cached outside the repository. A missing piece skips these tests, or fails them under
LOGITLS_REQUIRE_EDITORS=1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import CLIENT, ROOT, editor_env, serve_web, stop_process_group

EXTENSION = CLIENT / "vscode"
SETUP = ROOT / "tests" / "editors" / "vscode_e2e_setup.sh"
CHECK = ROOT / "tests" / "editors" / "vscode_check.mjs"

CAPITAL = "The capital of France is\n"
COUNT = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,\n"
# Words the default model finds likely, plausible, unlikely and surprising (` pel` is rank ~21000,
# past diagnosticMinBits): every lens colour and one surprise diagnostic.
LENS = ("The capital of France is Paris. The Eiffel Tower is made of cheese, and the river Seine sings "
        "quietly to zxqv pelicans.\n")
# The extension's colours (package.json `editor.semanticTokenColorCustomizations`) as CSS computes them.
GREEN, YELLOW, RED, PURPLE = "rgb(63, 185, 80)", "rgb(210, 153, 34)", "rgb(248, 81, 73)", "rgb(163, 113, 247)"


def _missing(message: str):
    if os.environ.get("LOGITLS_REQUIRE_EDITORS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _paths() -> dict[str, str]:
    proc = subprocess.run(["bash", str(SETUP), "--paths"], capture_output=True, text=True)
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0:
        _missing(f"code-server, Node 24 or Chromium is not installed (make vscode-e2e-setup installs them): {paths}")
    if not (EXTENSION / "node_modules" / ".bin" / "vsce").exists():
        _missing("client-config/vscode/node_modules is not installed (make vscode-test runs npm ci)")
    return paths


def _package(out: Path) -> Path:
    """The extension as a user installs it: bundled by esbuild (vscode:prepublish) and packaged by vsce."""
    vsix = out / "logitls.vsix"
    subprocess.run(["npx", "--no-install", "vsce", "package", "--no-dependencies", "-o", str(vsix)],
                   cwd=EXTENSION, check=True, capture_output=True, text=True, timeout=300)
    return vsix


# The compared model: the default one after one fine-tuning step on this sentence (base against
# fine-tuned, as a user would compare them), so that some tokens are much likelier under it and others
# less likely. (The default model in bfloat16 differs from it by under 0.1 nats on every token here:
# an honest fidelity check, but a colourless screen.)
TUNED_ON = "The Eiffel Tower is made of cheese, and the river Seine sings quietly to the pelicans."
FINE_TUNE = """
import sys, torch
from pathlib import Path
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from logitls.engine.loading import resolve_source
source, _ = resolve_source("default")
config = AutoConfig.from_pretrained(source)
# the converted folder may name its GGUF as a quantization (packed weights), which neither trains
# nor saves: the plain weights beside it are the ones wanted
config.__dict__.pop("quantization_config", None)
model = AutoModelForCausalLM.from_pretrained(source, config=config, dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(source)
ids = tokenizer(sys.argv[2], return_tensors="pt").input_ids
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
model(ids, labels=ids).loss.backward()
optimizer.step()
staging = Path(sys.argv[1] + ".tmp")
model.to(torch.bfloat16).save_pretrained(staging)
tokenizer.save_pretrained(staging)
staging.rename(sys.argv[1])  # whole or absent: the driver waits for this folder
"""


def _start_fine_tune(folder: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Runs beside code-server's start and the first half of the session (it takes ~30 s on 2 cores)."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-c", FINE_TUNE, str(folder), TUNED_ON], env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _token_spans(env: dict[str, str]) -> list[list[int]]:
    """The default model's tokens of LENS as the lens colours them: [start, end) without the whitespace
    (the space of ` Paris` stays plain), from the tokenizer the server uses."""
    proc = subprocess.run([sys.executable, "-m", "logitls", "tokens", "--json", LENS], env=env, capture_output=True,
                          text=True, timeout=300, check=True)
    spans = []
    for token in json.loads(proc.stdout)["tokens"]:
        piece = LENS[token["start"]:token["end"]]
        start = token["start"] + len(piece) - len(piece.lstrip())
        end = token["start"] + len(piece.rstrip())
        if end > start:
            spans.append([start, end])
    return spans


def _start_code_server(paths: dict[str, str], tmp: Path, env: dict[str, str], workspace: Path):
    data, extensions = tmp / "data", tmp / "extensions"
    config = tmp / "config.yaml"
    config.write_text("bind-addr: 127.0.0.1:0\nauth: none\ncert: false\n")
    common = [paths["NODE"], paths["CODE_SERVER"], "--user-data-dir", str(data), "--extensions-dir", str(extensions),
              "--config", str(config)]
    installed = subprocess.run([*common, "--install-extension", str(_package(tmp))], env=env, capture_output=True,
                               text=True, timeout=120)
    assert "successfully installed" in installed.stdout, installed.stdout + installed.stderr
    return serve_web([*common, "--auth", "none", "--bind-addr", "127.0.0.1:0", "--disable-telemetry",
                      "--disable-update-check", "--disable-workspace-trust", str(workspace)],
                     tmp / "code-server.log", r"HTTP server listening on (http://127\.0\.0\.1:\d+)/", "/healthz",
                     "code-server", 60, env=env)


@pytest.fixture(scope="module")
def vscode_run(tmp_path_factory):
    paths = _paths()
    tmp = tmp_path_factory.mktemp("vscode")
    workspace = tmp / "notes"
    workspace.mkdir()
    (workspace / "capital.txt").write_text(CAPITAL)
    (workspace / "count.txt").write_text(COUNT)
    (workspace / "lens.txt").write_text(LENS)
    env = editor_env(tmp)
    venv_bin = str(Path(sys.executable).parent)
    # logitls only through the setting: the venv's bin/ off PATH, and no other logitls on it
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if p != venv_bin and not (Path(p) / "logitls").exists())
    env["XDG_CACHE_HOME"] = str(tmp / "home" / ".cache")
    # code-server's window is a remote one: VS Code applies settings of the scopes `machine` and
    # `machine-overridable` (server.venv, server.command, model, lens.compareModel) from the Remote
    # settings (data/Machine/settings.json, "Preferences: Open Remote Settings") and ignores them
    # in the User settings there. The logitls settings go where a user of code-server must put them.
    user = tmp / "data" / "User" / "settings.json"
    settings = tmp / "data" / "Machine" / "settings.json"
    user.parent.mkdir(parents=True)
    settings.parent.mkdir(parents=True)
    user.write_text(json.dumps({
        "workbench.startupEditor": "none",
        "workbench.tips.enabled": False,
        "workbench.secondarySideBar.defaultVisibility": "hidden",
        "workbench.colorTheme": "Default Dark Modern",
        "chat.disableAIFeatures": True,
        "editor.minimap.enabled": False,
        "editor.wordWrap": "on",
        "editor.wordBasedSuggestions": "off",
        "editor.quickSuggestions": {"other": "off", "comments": "off", "strings": "off"},
    }, indent=2))
    settings.write_text(json.dumps({
        "logitls.server.venv": str(Path(sys.executable).parent.parent),
        # Problems lists no hints: the surprise as information, for the test to read there
        "logitls.lens.diagnosticSeverity": "information",
        # long enough that the cancel below cannot come after the end
        "logitls.generate.maxNewTokens": 2000,
    }, indent=2))
    compare = tmp / "default-tuned"
    out = tmp / "out"
    out.mkdir()
    token_spans = _token_spans(editor_env(tmp))
    fine_tune = _start_fine_tune(compare, editor_env(tmp), tmp / "fine-tune.log")
    try:
        proc, url = _start_code_server(paths, tmp, env, workspace)
        try:
            check_env = dict(env, LOGITLS_VSCODE_URL=f"{url}/?folder={workspace}",
                             LOGITLS_PLAYWRIGHT=paths["NODE_MODULES"], LOGITLS_CHROMIUM=paths["CHROMIUM"],
                             LOGITLS_TEST_OUT=str(out), LOGITLS_SETTINGS=str(settings), LOGITLS_COMPARE_MODEL=str(compare),
                             LOGITLS_TOKEN_SPANS=json.dumps(token_spans))
            driver = subprocess.run([paths["NODE"], str(CHECK)], env=check_env, capture_output=True, text=True,
                                    timeout=1800)
        finally:
            stop_process_group(proc)
    finally:
        fine_tune.kill()  # done long before, unless the session failed early
        fine_tune.wait()
    fine_tune_errors = (tmp / "fine-tune.log").read_text()
    result_file = out / "result.json"
    assert result_file.exists(), f"the driver wrote nothing (rc {driver.returncode}):\n{driver.stdout}\n{driver.stderr}"
    result = json.loads(result_file.read_text())
    result["token_spans"] = token_spans
    result["log"] = "".join(p.read_text() for p in sorted((tmp / "data" / "logs").glob("*/exthost*/logitls.logitls/*.log")))
    screens = os.environ.get("LOGITLS_SCREENS")
    if screens:
        for png in out.glob("vscode-*.png"):
            shutil.copy(png, Path(screens) / png.name)
    assert "error" not in result, (f"{result['error']}\nsteps: {result['steps']}\nscreens in {out}\n"
                                   f"fine-tuning: {fine_tune_errors[-2000:]}")
    return result


def test_the_server_is_found_through_the_venv_setting_and_gets_ready(vscode_run):
    assert vscode_run["ready_status"] == "logitls: default"
    assert any("loading" in s for s in vscode_run["status_at_start"]), vscode_run["status_at_start"]


def test_the_suggest_widget_shows_paris_first_with_its_percentage(vscode_run):
    first = vscode_run["completion"][0]
    assert first["label"] == "␣Paris", vscode_run["completion"]
    assert first["detail"] == "77.3%"
    assert len(vscode_run["completion"]) == 10


def test_the_menu_is_healed_after_a_space_and_inside_a_word(vscode_run):
    assert vscode_run["completion_after_space"][0]["label"] == "␣Paris"
    in_word = vscode_run["completion_in_word"]
    assert in_word[0]["label"] == "␣Paris"
    assert all(row["label"].startswith("␣Pa") for row in in_word), in_word
    assert vscode_run["line_after_accept"] == "The capital of France is Paris"


def test_generate_from_the_command_palette_inserts_the_continuation(vscode_run):
    before, after = vscode_run["text_before_generate"], vscode_run["text_after_generate"]
    assert before.startswith("The capital of France is Paris")
    assert after.startswith(before.split("\n")[0]) and len(after) > len(before)
    assert after.startswith("The capital of France is Paris.")


def test_inline_suggestion_shows_ghost_text(vscode_run):
    assert vscode_run["inline"].strip(), vscode_run["inline"]


def test_cancelling_a_generation_inserts_nothing_and_shows_no_error(vscode_run):
    assert vscode_run["count_after"] == vscode_run["count_before"]
    assert vscode_run["dialogs"] == []  # was: "Command … resulted in an error: Request … is canceled"


def test_the_lens_colours_tokens_and_shows_perplexity_and_a_surprise(vscode_run):
    spans = [span for span in vscode_run["rank_colours"] if span["text"].strip()]
    assert {GREEN, YELLOW, RED, PURPLE} <= {span["colour"] for span in spans}, spans
    colour = {span["text"].strip(): span["colour"] for span in spans}
    assert colour["Paris"] == GREEN and colour["cheese"] == PURPLE, colour
    assert re.fullmatch(r"logitls: perplexity [\d.]+ · [\d.]+ bits/token · 32 tokens", vscode_run["code_lens"]), \
        vscode_run["code_lens"]
    problems = vscode_run["problems"]
    assert any(row.startswith("lens.txt") for row in problems), problems
    assert any(re.match(r"unlikely here: p=\S+ \(rank \d+, [\d.]+ bits\); the model expected", row) for row in problems)


def test_each_colour_covers_one_whole_token(vscode_run):
    spans = [[span["start"], span["start"] + len(span["text"])] for span in vscode_run["rank_colours"]]
    # every token but the first (it has no probability: nothing before it) is coloured, and only those
    assert spans == vscode_run["token_spans"][1:], (spans, vscode_run["token_spans"])


def test_after_an_undo_the_colours_are_the_restored_texts_on_its_tokens(vscode_run):
    # was: the branched text's colours shifted along with the undo stayed on the screens (`a|nd`,
    # `pelica|ns`) while the driver compared colours without their places
    assert vscode_run["colours_after_hover_link_undo"] == vscode_run["rank_colours"]
    assert vscode_run["colours_after_undo"] == vscode_run["rank_colours"]


def test_hover_shows_probability_and_rank(vscode_run):
    hover = vscode_run["hover"]
    assert "␣Paris" in hover and re.search(r"p = 0\.\d+", hover) and "rank 1 of 49152" in hover, hover


def test_the_hovers_branch_links_run_in_the_real_workbench(vscode_run):
    assert vscode_run["hover_links"] == 4  # one per alternative, none on the written token
    assert vscode_run["line_after_hover_link"].startswith("The capital of France is London")
    assert vscode_run["line_after_hover_link_undo"] == vscode_run["lens_line"]


def test_branch_code_action_takes_an_alternative_and_one_undo_restores(vscode_run):
    titles = vscode_run["code_actions"]
    assert "Use ' London' (1.2%) and continue" in titles, titles
    assert vscode_run["line_after_branch"].startswith("The capital of France is London"), vscode_run["line_after_branch"]
    assert vscode_run["line_after_undo"] == vscode_run["lens_line"]


def test_entropy_and_compare_views(vscode_run):
    assert vscode_run["entropy_colours"] != vscode_run["rank_colours"]
    hover = vscode_run["compare_hover"]
    assert re.search(r"under the compared model: p = [\d.e-]+ \([\d.<]+%\); log-ratio [+-][\d.]+ nats", hover), hover
    # the fine-tuned model finds its own sentence's words likelier (red), and others less likely (green)
    compared = {span["colour"] for span in vscode_run["compare_colours"] if span["text"].strip()}
    assert {GREEN, RED} <= compared, vscode_run["compare_colours"]


def test_restart_server_goes_loading_then_ready(vscode_run):
    history = vscode_run["status_restart"]
    assert any("loading" in s for s in history) and history[-1] == "logitls: default", history


def test_a_bad_model_shows_one_error_and_recovers_when_fixed(vscode_run):
    assert "failed" in vscode_run["failed_status"]
    errors = [t for t in vscode_run["bad_model_toasts"] if "/nonexistent/model" in t["text"]]
    assert len(errors) == 1, vscode_run["bad_model_toasts"]
    assert vscode_run["recovered_status"] == "logitls: default"


def test_the_output_channel_shows_each_server_line_once_at_its_level(vscode_run):
    log = vscode_run["log"]
    ready = [line for line in log.splitlines() if "model default ready" in line]
    # three loads (the start, Restart server, the fixed model), each said once, as information
    assert len(ready) == 3 and all("[info]" in line for line in ready), ready
    assert not re.search(r"\[error\] logitls(\.\w+)? (INFO|WARNING|DEBUG)", log), log
    # the restart after a settings change: VS Code's late answers to the lens refreshes are expected
    assert "unknown message id" not in log and "does not fit" not in log, log
