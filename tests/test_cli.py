"""`logitls tokens | top | generate` as a user runs them: a real process, its stdout, stderr and status."""

from __future__ import annotations

import json

import pytest

from conftest import NOTEBOOK_IDS, NOTEBOOK_TEXT
from conftest import run_logitls as logitls


def test_tokens_shows_the_notebook_table(tiny_models):
    result = logitls("tokens", NOTEBOOK_TEXT, "--model", str(tiny_models["tokenizer"]))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert [int(r[1]) for r in rows] == NOTEBOOK_IDS
    assert [r[2] for r in rows][:4] == ["U", "d", "acity", "␣is"]


def test_tokens_json_and_stdin(tiny_models):
    result = logitls("tokens", "-", "--json", "--model", str(tiny_models["tokenizer"]), stdin=NOTEBOOK_TEXT)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [t["id"] for t in data["tokens"]] == NOTEBOOK_IDS
    assert "".join(t["text"] for t in data["tokens"]) == NOTEBOOK_TEXT


def test_top_json_on_a_tiny_model_matches_the_engine(tiny_models, tiny_engine):
    folder = tiny_models["llama"] if type(tiny_engine.model).__name__.startswith("Llama") else tiny_models["gpt2"]
    result = logitls("top", "hello world", "-n", "7", "--json", "--model", str(folder))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    expected = tiny_engine.next_tokens("hello world", 7).choices
    assert [t["id"] for t in data["tokens"]] == [c.id for c in expected]
    assert [t["prob"] for t in data["tokens"]] == pytest.approx([c.prob for c in expected], abs=1e-6)


def test_generate_streams_the_greedy_continuation(tiny_models, tiny_engine):
    folder = tiny_models["llama"] if type(tiny_engine.model).__name__.startswith("Llama") else tiny_models["gpt2"]
    result = logitls("generate", NOTEBOOK_TEXT, "--max-new-tokens", "12", "--json", "--model", str(folder))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["continuation"] == tiny_engine.generate_text(NOTEBOOK_TEXT, max_new_tokens=12)
    plain = logitls("generate", NOTEBOOK_TEXT, "--max-new-tokens", "12", "--model", str(folder))
    assert plain.stdout == data["continuation"] + "\n"


def test_top_on_the_default_model_prints_paris_first():
    result = logitls("top", "The capital of France is")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["rank", "token", "id", "prob", "logprob"]
    rank, token, _, prob, _ = lines[1].split()
    assert (rank, token) == ("1", "␣Paris")  # the leading space is visible
    assert 0.6 < float(prob) < 0.9
    assert len(lines) == 6


@pytest.mark.parametrize(
    "args, message",
    [
        (["top", "hi", "--model", "/no/such/model"], "does not exist"),
        (["top", "hi", "-n", "0", "--model", "{tiny}"], "-n must be at least 1"),
        (["top", "", "--model", "{tiny}"], "the text is empty"),
        (["generate", "hi", "--max-new-tokens", "-3", "--model", "{tiny}"], "must not be negative"),
        (["top", "hi", "--model", "{corrupt}"], "cannot read GGUF"),
        (["top", "hi", "--model", "{not_a_model}"], "without config.json"),
        (["top", "hi", "--model", "nosuch-org/nosuch-model"], "not in the local Hugging Face cache"),
        (["top", " word" * 200, "--model", "{tiny}"], "longer than the model's context window"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_status_2(args, message, tiny_models, tmp_path):
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(b"GGUF this is not really a gguf file")
    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    args = [a.format(tiny=tiny_models["gpt2"], corrupt=corrupt, not_a_model=not_a_model) for a in args]
    import os

    env = dict(os.environ, LOGITLS_CACHE_DIR=str(tmp_path / "cache"))
    result = logitls(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert [l for l in result.stderr.splitlines() if l.startswith("logitls: error:")] != []
    assert not list((tmp_path / "cache").glob("converted/*")), "a failed conversion must leave nothing behind"


def test_truncate_flag_accepts_an_oversized_text(tiny_models):
    result = logitls("top", " word" * 200, "--truncate", "--json", "--model", str(tiny_models["gpt2"]))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["truncated"] is True


def test_bytes_that_are_not_utf8_on_the_command_line_read_as_u_fffd(tiny_models, tiny_gpt2_engine):
    """Python decodes such bytes in argv to lone surrogates (U+DCxx), which the tokenizer refuses."""
    result = logitls("tokens", "caf\udce9 ok", "--json", "--model", str(tiny_models["tokenizer"]))
    assert result.returncode == 0, result.stderr
    assert "".join(t["text"] for t in json.loads(result.stdout)["tokens"]) == "caf\ufffd ok"
    result = logitls("top", "caf\udce9 ok", "-n", "3", "--json", "--model", str(tiny_models["gpt2"]))
    assert result.returncode == 0, result.stderr
    expected = tiny_gpt2_engine.next_tokens("caf\ufffd ok", 3).choices
    assert [t["id"] for t in json.loads(result.stdout)["tokens"]] == [c.id for c in expected]
