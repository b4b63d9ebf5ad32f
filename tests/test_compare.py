"""Two models on one text: per-token log-ratios, the tokenizer check, and `logitls lens --compare`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from logitls.engine.compare import TokenizersDiffer, compare_scores

TEXT = "Udacity is the best place to learn about generative models and more"


def test_each_token_gets_both_models_logprobs(tiny_models):
    from conftest import engine_for

    gpt2, llama = engine_for(tiny_models["gpt2"]), engine_for(tiny_models["llama"])
    rows, ours, theirs = compare_scores(gpt2, llama, TEXT)
    assert [r.token.id for r in rows] == [s.token.id for s in ours.tokens]
    for row, a, b in zip(rows, ours.tokens, theirs.tokens):
        assert row.logprob == a.logprob and row.compare_logprob == b.logprob
        if a.logprob is not None:
            assert row.compare_delta == pytest.approx(a.logprob - b.logprob)
    self_rows, _, _ = compare_scores(gpt2, gpt2, TEXT)
    assert all(r.compare_delta in (None, 0.0) for r in self_rows)  # a model against itself: no difference


def test_different_tokenizers_are_refused(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    from conftest import engine_for

    gpt2 = engine_for(tiny_models["gpt2"])
    other = engine_for(tiny_models["llama"])
    other.tokenizer = AutoTokenizer.from_pretrained(tiny_models["tokenizer"])
    other.tokenizer.add_tokens(["<extra-token>"])
    with pytest.raises(TokenizersDiffer, match="tokenize differently"):
        compare_scores(gpt2, other, TEXT)


def test_lens_compare_on_the_command_line(tiny_models, tmp_path):
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT)
    html = tmp_path / "compare.html"
    result = subprocess.run([sys.executable, "-m", "logitls", "lens", str(text_file), "--json", "--html", str(html),
                             "--model", str(tiny_models["gpt2"]), "--compare", str(tiny_models["llama"])],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "bits/token" in report["summary"] and len(report["tokens"]) > 5
    scored = [t for t in report["tokens"] if t["delta"] is not None]
    assert all(t["delta"] == pytest.approx(t["logprob"] - t["otherLogprob"]) for t in scored)
    assert "likelier under" in html.read_text()
