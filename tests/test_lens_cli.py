"""`logitls lens`: the terminal view, --json and --html agree with the engine."""

from __future__ import annotations

import json

import pytest

from conftest import run_logitls
from logitls.lens import bucket_of, document_stats, visible_spans


def lens(*args: str, stdin: str | None = None):
    return run_logitls("lens", *args, stdin=stdin)


def test_json_numbers_are_the_engines(tiny_models, tiny_gpt2_engine, tmp_path):
    text = "The quick brown fox jumps over the lazy dog.\nA second line.\n"
    path = tmp_path / "fox.txt"
    path.write_text(text)
    result = lens(str(path), "--json", "--model", str(tiny_models["gpt2"]))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    scores = tiny_gpt2_engine.document_scores(text)
    assert [t["rank"] for t in data["tokens"]] == [s.rank for s in scores.tokens]
    assert data["tokens"][0]["prob"] is None and scores.tokens[0].prob is None
    assert [t["prob"] for t in data["tokens"][1:]] == pytest.approx([s.prob for s in scores.tokens[1:]], abs=1e-6)
    assert data["stats"]["perplexity"] == pytest.approx(document_stats(scores).perplexity, rel=1e-6)
    assert data["tokens"][1]["bucket"] in ("likely", "plausible", "unlikely", "surprising")


def test_plain_markers_when_not_a_terminal(tiny_models, tiny_gpt2_engine, tmp_path):
    text = "one two three four five six seven"
    path = tmp_path / "plain.txt"
    path.write_text(text)
    result = lens(str(path), "--model", str(tiny_models["gpt2"]))
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout  # no colour codes in a pipe
    first_line = result.stdout.splitlines()[0]
    markers = {0: ("", ""), 1: ("{", "}"), 2: ("[", "]"), 3: ("<<", ">>")}
    expected, position = [], 0
    for span in visible_spans(text, tiny_gpt2_engine.document_scores(text)):
        opening, closing = markers[span.bucket]
        expected.append(text[position:span.start] + opening + text[span.start:span.end] + closing)
        position = span.end
    assert first_line == "".join(expected) + text[position:]
    assert "perplexity" in result.stdout.splitlines()[-1]


def test_html_page(tiny_models, tmp_path):
    path = tmp_path / "page.txt"
    path.write_text("Hello <world> & friends")
    out = tmp_path / "page.html"
    result = lens(str(path), "--html", str(out), "--model", str(tiny_models["gpt2"]))
    assert result.returncode == 0, result.stderr
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<world>" not in page
    assert "&lt;" in page and "&gt;" in page and "&amp;" in page
    assert 'title="' in page and "rank" in page and "perplexity" in page


@pytest.mark.parametrize("args, message", [(["/no/such/file.txt"], "no such file"), (["-"], "the text is empty")])
def test_bad_input(args, message, tiny_models):
    result = lens(*args, "--model", str(tiny_models["gpt2"]), stdin="")
    assert result.returncode == 2 and message in result.stderr


def test_bucket_edges():
    assert [bucket_of(r) for r in (1, 10, 11, 100, 101, 1000, 1001)] == [0, 0, 1, 1, 2, 2, 3]


def score(*args: str, stdin: str | None = None):
    return run_logitls("score", *args, stdin=stdin)


def test_jsonl_export(tiny_models, tiny_gpt2_engine, tmp_path):
    text = "The quick brown fox jumps over the lazy dog.\n"
    path = tmp_path / "fox.txt"
    path.write_text(text)
    result = lens(str(path), "--jsonl", "--model", str(tiny_models["gpt2"]))
    assert result.returncode == 0, result.stderr
    header, *rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert header["type"] == "header" and header["model"] == str(tiny_models["gpt2"])
    assert header["dtype"] == "float32" and header["contextWindow"] == tiny_gpt2_engine.context_window
    assert header["revision"]["kind"] == "folder" and len(header["revision"]["sha256"]) == 64
    assert header["revision"]["files"] == ["model.safetensors"]
    scores = tiny_gpt2_engine.document_scores(text)
    assert len(rows) == len(scores.tokens)
    for row, s in zip(rows, scores.tokens):
        assert row["type"] == "token"
        assert (row["text"], row["start"], row["end"], row["id"], row["rank"]) == (s.token.text, s.start, s.end,
                                                                                  s.token.id, s.rank)
        if s.logprob is None:
            assert row["prob"] is None and row["entropyBits"] is None
            continue
        assert row["logprob"] == pytest.approx(s.logprob, abs=1e-5)
        assert row["entropyBits"] == pytest.approx(s.entropy_bits, abs=1e-4)
        assert row["margin"] == pytest.approx(s.margin, abs=1e-5)
        assert [a["id"] for a in row["alternatives"]] == [a.id for a in s.alternatives]
    # the same hash again (remembered or not), and --json carries entropy too
    again = lens(str(path), "--jsonl", "--model", str(tiny_models["gpt2"]))
    assert json.loads(again.stdout.splitlines()[0])["revision"] == header["revision"]
    data = json.loads(lens(str(path), "--json", "--model", str(tiny_models["gpt2"])).stdout)
    assert data["tokens"][2]["entropyBits"] == pytest.approx(scores.tokens[2].entropy_bits, abs=1e-4)


def test_html_carries_entropy(tiny_models, tmp_path):
    path = tmp_path / "page.txt"
    path.write_text("one two three four")
    out = tmp_path / "page.html"
    result = lens(str(path), "--html", str(out), "--model", str(tiny_models["gpt2"]))
    assert result.returncode == 0, result.stderr
    assert "entropy here" in out.read_text() and "top-two margin" in out.read_text()


def test_score_command(tiny_models, tiny_gpt2_engine, tmp_path):
    text = "The quick brown fox jumps over the lazy dog."
    path = tmp_path / "fox.txt"
    path.write_text(text)
    result = score(str(path), "--range", "4:19", "--json", "--model", str(tiny_models["gpt2"]))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    inside = [s for s in tiny_gpt2_engine.token_scores(text).tokens if s.start >= 3 and s.end <= 19 and s.logprob]
    assert data["tokens"] == len(inside) == 3 and data["text"] == " quick brown fox"
    assert data["logprob"] == pytest.approx(sum(s.logprob for s in inside), abs=1e-4)
    assert data["requested"] == {"start": 4, "end": 19}
    plain = score("-", "--range", "4:19", "--model", str(tiny_models["gpt2"]), stdin=text)
    assert plain.returncode == 0, plain.stderr
    assert "bits/token" in plain.stdout and f"perplexity {data['perplexity']:.2f}" in plain.stdout


@pytest.mark.parametrize("range_, message", [("4-19", "START:END"), ("19:4", "START < END"), ("0:999", "≤ 44"),
                                             ("0:3", "no scored token")])
def test_score_bad_range(range_, message, tiny_models, tmp_path):
    path = tmp_path / "fox.txt"
    path.write_text("The quick brown fox jumps over the lazy dog.")
    result = score(str(path), "--range", range_, "--model", str(tiny_models["gpt2"]))
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_jsonl_header_names_the_default_models_file_hash(tmp_path):
    import hashlib

    from logitls.engine.loading import default_gguf

    path = tmp_path / "one.txt"
    path.write_text("The capital of France is Paris.")
    result = lens(str(path), "--jsonl", "--model", "default")
    assert result.returncode == 0, result.stderr
    header = json.loads(result.stdout.splitlines()[0])
    gguf = default_gguf()
    assert header["revision"] == {"kind": "gguf", "file": gguf.name,
                                  "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest()}
    assert header["model"] == "default" and header["contextWindow"] > 0


def test_revision_of_a_hub_model_is_its_commit():
    from types import SimpleNamespace

    from logitls.engine.loading import LoadedModel, model_revision

    config = SimpleNamespace(_commit_hash="0123abc")
    loaded = LoadedModel(SimpleNamespace(config=config), None, "someone/some-model", "someone/some-model", "cpu",
                         "float32")
    assert model_revision(loaded) == {"kind": "hub", "commit": "0123abc"}
