"""Samplers (engine/sampling.py) and sampled generation, with exact expectations."""

from __future__ import annotations

import json

import pytest
import torch

from logitls.engine.sampling import SamplingParams

PROMPT = "Udacity is the best place to learn about"


def test_samplers_on_known_logits():
    # softmax([2, 1, 0, -1]) = 0.6439, 0.2369, 0.0871, 0.0321
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    assert SamplingParams().apply(logits).tolist() == pytest.approx(torch.softmax(logits, -1).tolist())
    two = torch.softmax(torch.tensor([2.0, 1.0]), -1).tolist()
    assert SamplingParams(top_k=2).apply(logits).tolist() == pytest.approx(two + [0.0, 0.0], abs=0)
    # top-p 0.8: 0.6439 is not enough, 0.6439 + 0.2369 is; the rest are cut.
    assert SamplingParams(top_p=0.8).apply(logits).tolist() == pytest.approx(two + [0.0, 0.0], abs=0)
    # min-p 0.1: keep p >= 0.0644, so 0.0871 stays and 0.0321 goes.
    three = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), -1).tolist()
    assert SamplingParams(min_p=0.1).apply(logits).tolist() == pytest.approx(three + [0.0], abs=0)
    # temperature first: at T=0.5 the logits are [4, 2, 0, -2], p = 0.8668, 0.1173, ...: top-p 0.8 keeps one.
    assert SamplingParams(temperature=0.5, top_p=0.8).apply(logits).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert SamplingParams(temperature=2.0).apply(logits).tolist() == pytest.approx(
        torch.softmax(logits / 2, -1).tolist())


@pytest.mark.parametrize("params", [SamplingParams(temperature=0), SamplingParams(top_k=1),
                                    SamplingParams(temperature=1e-6)])
def test_temperature_to_zero_and_top_k_one_are_greedy(tiny_engine, params):
    greedy = [s.token.id for s in tiny_engine.greedy(PROMPT, max_new_tokens=8)]
    sampled = [s.token.id for s in tiny_engine.sample(PROMPT, max_new_tokens=8, params=params)]
    assert sampled == greedy


def test_after_samplers_sums_to_one_over_kept_and_zero_elsewhere(tiny_engine):
    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05)
    ids, _, _ = tiny_engine._prepare(PROMPT)
    state = tiny_engine._state("")
    tiny_engine._feed(state, ids, False, None)
    logits = state.last_logits.float()
    after = params.apply(logits)
    kept = after > 0
    assert 1 <= int(kept.sum()) <= 40
    assert float(after[kept].sum()) == pytest.approx(1.0, abs=1e-6)
    assert bool((after[~kept] == 0).all())
    # On the kept tokens the ratios are those of softmax(logits / T): renormalised, not reshaped.
    expected = torch.softmax((logits / 0.7).masked_fill(~kept, float("-inf")), -1)
    assert torch.allclose(after, expected, atol=1e-7)
    # The model's top token is always kept, and the numbers the engine reports beside it are these.
    result, after_top = tiny_engine.next_tokens_sampled(PROMPT, params, 5)
    rows = list(zip(result.choices, after_top))
    assert rows[0][1] > 0
    assert [p for _, p in rows] == [float(after[c.token.id]) for c, _ in rows]
    assert rows[0][0].prob == pytest.approx(float(torch.softmax(logits, -1).max()))


def test_same_seed_same_text_and_another_seed_differs(tiny_engine):
    def run(seed):
        params = SamplingParams(temperature=1.5, seed=seed)
        return [s.token.id for s in tiny_engine.sample(PROMPT, max_new_tokens=12, params=params)]

    first = run(7)
    assert run(7) == first
    assert any(run(seed) != first for seed in (8, 9, 10))


def test_cli_top_prints_both_columns_labelled(tiny_models, tiny_gpt2_engine):
    from conftest import run_logitls

    args = ["top", PROMPT, "-n", "5", "--temperature", "3", "--top-k", "3", "--model", str(tiny_models["gpt2"])]
    data = json.loads(run_logitls(*args, "--json").stdout)
    params = SamplingParams(temperature=3, top_k=3)
    result, after = tiny_gpt2_engine.next_tokens_sampled(PROMPT, params, 5)
    expected = list(zip(result.choices, after))
    assert data["samplers"] == "temperature 3, top-k 3"
    assert [t["id"] for t in data["tokens"]] == [c.id for c, _ in expected]
    assert [t["prob"] for t in data["tokens"]] == pytest.approx([c.prob for c, _ in expected])
    assert [t["afterSamplers"] for t in data["tokens"]] == pytest.approx([after for _, after in expected])
    assert [t["afterSamplers"] > 0 for t in data["tokens"]] == [True] * 3 + [False] * 2
    table = run_logitls(*args)
    assert "model p" in table.stdout and "after samplers" in table.stdout
    assert "temperature 3, top-k 3" in table.stderr


def test_cli_generate_sample_seed_is_reproducible(tiny_models, tiny_gpt2_engine):
    from conftest import run_logitls

    args = ["generate", PROMPT, "--sample", "--seed", "3", "--temperature", "1.5", "--max-new-tokens", "10",
            "--json", "--model", str(tiny_models["gpt2"])]
    first = json.loads(run_logitls(*args).stdout)
    params = SamplingParams(temperature=1.5, seed=3)
    assert first["ids"] == [s.token.id for s in tiny_gpt2_engine.sample(PROMPT, max_new_tokens=10, params=params)]
    assert json.loads(run_logitls(*args).stdout) == first
    bad = run_logitls("generate", PROMPT, "--seed", "3", "--model", str(tiny_models["gpt2"]))
    assert bad.returncode == 2 and "--seed needs --sample" in bad.stderr


def test_branch_continues_sampled_with_the_seed(tiny_gpt2_engine):
    from logitls.engine.branch import continue_branch

    text = PROMPT + " everything"
    start = len(PROMPT)
    params = SamplingParams(temperature=1.5, seed=5)
    runs = [continue_branch(tiny_gpt2_engine, text, start, len(text), " nothing", until="tokens", max_new_tokens=6,
                            sampling=params) for _ in range(2)]
    expected = "".join(s.text for s in tiny_gpt2_engine.sample(PROMPT + " nothing", max_new_tokens=6, params=params))
    assert runs[0].new_text == runs[1].new_text == " nothing" + expected


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.7, top_p=0.9), SamplingParams(top_k=20, min_p=0.05),
                                    SamplingParams(temperature=1.3, top_k=50, top_p=0.8, min_p=0.02)])
def test_same_tokens_and_numbers_as_transformers_warpers(params):
    """transformers' generate(do_sample=True) chain: temperature, top-k, top-p, min-p, then softmax."""
    from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    logits = torch.randn(1, 500, generator=torch.Generator().manual_seed(0)) * 3
    chain = LogitsProcessorList([TemperatureLogitsWarper(params.temperature)])
    if params.top_k:
        chain.append(TopKLogitsWarper(params.top_k))
    if params.top_p < 1:
        chain.append(TopPLogitsWarper(params.top_p))
    if params.min_p:
        chain.append(MinPLogitsWarper(params.min_p))
    expected = torch.softmax(chain(torch.zeros(1, 1, dtype=torch.long), logits.clone()), -1)[0]
    after = params.apply(logits[0])
    assert torch.equal(after > 0, expected > 0)
    assert torch.allclose(after, expected, atol=1e-6)
