"""The shipped Emacs config (client-config/emacs/logitls.el) with eglot in the real Emacs (batch
mode), on the embedded model. tests/editors/emacs_check.el runs inside Emacs and records what
Emacs saw: completion-at-point's region, candidates and annotations after `…is`, `…is ` and
`…is Pa` (and the first candidate chosen and inserted), eldoc's hover text, the buffer after
`M-x logitls-generate`, the branch code actions of `M-x eglot-code-actions` with the buffer
after one of them, and `M-x logitls-score-selection`'s answer."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import CLIENT, FRANCE, ROOT, editor_env, london_branch, require_program

CHECK = ROOT / "tests" / "editors" / "emacs_check.el"


@pytest.fixture(scope="module")
def emacs_run(tmp_path_factory):
    emacs = require_program("emacs")
    tmp = tmp_path_factory.mktemp("emacs")
    document = tmp / "capital.txt"
    document.write_text("The capital of France is\n")
    out = tmp / "out.json"
    env = editor_env(tmp)
    env.update(LOGITLS_TEST_FILE=str(document), LOGITLS_TEST_OUT=str(out))
    has_eglot = subprocess.run([emacs, "--batch", "-q", "--eval", "(require 'eglot)"], env=env, capture_output=True)
    if has_eglot.returncode != 0:
        require_program("eglot-for-emacs (apt-get install elpa-eglot)")
    # -q, not -Q: site-start must run so that Debian's elpa-eglot is on the load-path
    proc = subprocess.run([emacs, "--batch", "-q", "-L", str(CLIENT / "emacs"), "-l", str(CHECK)], env=env,
                          capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    assert out.exists(), f"Emacs wrote no result (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(out.read_text())
    assert "error" not in result, (result["error"], result.get("server-stderr"), proc.stderr[-3000:])
    return result


def test_eglot_connects_and_the_model_gets_ready(emacs_run):
    assert emacs_run["major-mode"] == "text-mode"
    assert emacs_run["managed"] is True
    assert emacs_run["status"] == {"state": "ready", "model": "default",
                                  "message": "default on cpu, native forward, packed weights (fp32 kernel, 211 layers)"}
    assert emacs_run["mode-line"] == " logitls:ready"


def _case(emacs_run, text):
    return next(case for case in emacs_run["completion-cases"] if case["text"] == text)


def test_completion_at_point_lists_tokens_with_probabilities(emacs_run):
    assert emacs_run["capf"][0] == "logitls-completion-at-point"
    case = _case(emacs_run, "The capital of France is")
    # token healing: the region is ` is` and the candidates are ` is` + the next token
    assert case["probe"] == " is"
    candidates = case["candidates"]
    assert len(candidates) == 10
    assert candidates[0][0] == " is Paris"
    assert "␣Paris" in candidates[0][1] and "77.3%" in candidates[0][1] and "rank 1" in candidates[0][1]
    assert all(candidate.startswith(" is") for candidate, _ in candidates)
    assert all("%" in annotation for _, annotation in candidates)


@pytest.mark.parametrize("text, probe, first", [("The capital of France is", " is", " is Paris"),
                                                ("The capital of France is ", " ", " Paris"),
                                                ("The capital of France is Pa", " Pa", " Paris")])
def test_choosing_the_first_candidate_completes_what_was_typed(emacs_run, text, probe, first):
    """The region is the space or half-typed word before point; choosing Paris makes `…is Paris`
    (not `…is  Paris` nor `…is Pa Paris`)."""
    case = _case(emacs_run, text)
    assert case["probe"] == probe
    assert len(case["candidates"]) == 10
    assert case["candidates"][0][0] == first
    assert "␣Paris" in case["candidates"][0][1] and "77.3%" in case["candidates"][0][1]
    assert case["after"] == "The capital of France is Paris\n"


def test_hover_through_eldoc_shows_the_probability(emacs_run):
    hover = emacs_run["hover"]
    assert "`␣is`" in hover and "63.7%" in hover and "rank 1" in hover


def test_logitls_generate_changes_the_buffer(emacs_run):
    result = emacs_run["generate-result"]
    assert result["applied"] is True and result["text"].startswith(" Paris")
    assert emacs_run["after-generate"] == "The capital of France is" + result["text"] + "\n"


def test_branch_code_actions_through_eglot(emacs_run, default_engine):
    """M-x eglot-code-actions on ` Paris`: the menu offers the other tokens the hover lists; the
    ` London` one runs logitls.branch, whose edit (applied without a second question: logitls.el)
    rewrites the rest of the line."""
    menu = emacs_run["branch-menu"]
    assert "Use ' the' (6.5%) and continue" in menu and "Use ' London' (1.2%) and continue" in menu, menu
    assert not any("Paris" in title for title in menu), menu
    assert emacs_run["branch-result"]["applied"] is True, emacs_run["branch-result"]
    assert emacs_run["after-branch"] == london_branch(default_engine) + "\n"


def test_logitls_score_selection_scores_the_region(emacs_run, default_engine):
    """M-x logitls-score-selection on `Paris. It is big.`: the numbers `logitls score` gives there."""
    from logitls.lens import score_selection, selection_summary

    text = FRANCE + "\n"
    result = emacs_run["score-result"]
    expected = score_selection(text, default_engine.document_scores(text), text.index("Paris"), len(text) - 1)
    assert result["summary"] == selection_summary(expected, text), result
    assert "bits/token" in result["summary"] and result["tokens"] == expected.tokens
