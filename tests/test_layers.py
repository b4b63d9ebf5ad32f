"""The logit lens (engine/layers.py): the last row is the model's output exactly; the other rows come
from the right hidden states, checked against transformers' output_hidden_states with its norm and head."""

from __future__ import annotations

import pytest
import torch

PROMPT = "Udacity is the best place to learn about"


def test_last_row_equals_next_tokens_exactly(tiny_engine):
    result = tiny_engine.layers(PROMPT)
    expected = tiny_engine.next_tokens(PROMPT, 5).choices
    last = result.rows[-1]
    assert len(result.rows) == tiny_engine.model.config.num_hidden_layers + 1
    assert last.top.id == expected[0].id and last.top.logprob == expected[0].logprob
    assert torch.equal(last.logprobs.topk(5).values, torch.tensor([c.logprob for c in expected]))
    assert not result.written and result.target.id == expected[0].id and last.target.rank == 1


def test_rows_are_the_hidden_states_through_norm_and_head(tiny_models):
    """On the tiny random Llama (native forward): each row against transformers' own hidden states."""
    from transformers import AutoModelForCausalLM

    from conftest import engine_for

    engine = engine_for(tiny_models["llama"])
    assert engine.model.forward_path == "native"
    hf = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32).eval()
    ids = engine.tokenize(PROMPT).ids
    position = 3
    result = engine.layers(PROMPT, position)
    with torch.no_grad():
        out = hf(input_ids=torch.tensor([ids]), output_hidden_states=True)
    layers = hf.config.num_hidden_layers
    assert len(result.rows) == layers + 1
    for layer in range(layers):
        expected = torch.log_softmax(hf.lm_head(hf.model.norm(out.hidden_states[layer][0, position])).float(), -1)
        assert torch.allclose(result.rows[layer].logprobs, expected, atol=1e-4), layer
    assert torch.allclose(result.rows[-1].logprobs, torch.log_softmax(out.logits[0, position].float(), -1), atol=1e-4)
    assert result.written and result.target.id == ids[position + 1]
    assert [r.target.rank for r in result.rows] == [
        int((r.logprobs > r.logprobs[ids[position + 1]]).sum()) + 1 for r in result.rows]


def test_transformers_model_rows(tiny_models):
    """GPT-2 runs through transformers: its rows use ln_f and the head on the hidden states."""
    from conftest import engine_for

    engine = engine_for(tiny_models["gpt2"])
    hf = engine.model.hf
    ids = engine.tokenize(PROMPT).ids
    result = engine.layers(PROMPT, 2)
    with torch.no_grad():
        out = hf(input_ids=torch.tensor([ids]), output_hidden_states=True)
    first = torch.log_softmax(hf.lm_head(hf.transformer.ln_f(out.hidden_states[1][0, 2])).float(), -1)
    assert torch.allclose(result.rows[1].logprobs, first, atol=1e-4)
    assert torch.allclose(result.rows[-1].logprobs, torch.log_softmax(out.logits[0, 2].float(), -1), atol=1e-4)


def test_position_out_of_range_is_refused(tiny_gpt2_engine):
    with pytest.raises(ValueError, match="position must be from 0"):
        tiny_gpt2_engine.layers("hello", 99)


def test_cli_layers_table_and_json(tiny_models, tiny_gpt2_engine):
    import json

    from conftest import run_logitls

    result = tiny_gpt2_engine.layers(PROMPT, 2)
    data = json.loads(run_logitls("layers", PROMPT, "--position", "2", "--json", "--model",
                                  str(tiny_models["gpt2"])).stdout)
    assert data["written"] and data["targetId"] == result.target.id
    assert [(row["topId"], row["targetRank"]) for row in data["layers"]] == [
        (r.top.id, r.target.rank) for r in result.rows]
    assert [row["targetProb"] for row in data["layers"]] == pytest.approx([r.target.prob for r in result.rows])
    table = run_logitls("layers", PROMPT, "--model", str(tiny_models["gpt2"]))
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 1 + len(result.rows)
    assert "rank of" in table.stdout and "the model's own next token" in table.stderr
    bad = run_logitls("layers", PROMPT, "--position", "99", "--model", str(tiny_models["gpt2"]))
    assert bad.returncode == 2 and "position must be from 0" in bad.stderr
