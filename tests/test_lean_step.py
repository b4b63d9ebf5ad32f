"""The lean decode step (engine/lean_step.py): greedy decoding through it gives transformers' tokens and
logits bit for bit, leaves the document's KV cache as transformers' forward would, and is dropped for
good when it ever disagrees."""

from __future__ import annotations

import logging

import pytest
import torch

from conftest import block_layers, tiny_llama_family

from logitls.engine import Engine, kernels
from logitls.engine.lean_step import LeanStep
from logitls.engine.packed import Q4_1, apply_packed, build_packed

PROMPT = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n# the quick brown fox"


def _tiny(architecture: str, folder):
    model, tokenizer = tiny_llama_family(architecture, seed=11, max_positions=256)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _pack(engine: Engine) -> Engine:
    """Give the engine's model GGUF-block weights (Q4_1, the head Q8_0) on the fp32 kernel."""
    assert kernels.available(), kernels.unavailable_reason()
    model = engine.model
    layers = block_layers(model, Q4_1)
    assert apply_packed(model, build_packed(model, layers, kernel="fp32")) == len(layers)
    if engine.lean_step is not None:  # built on the layers as loaded: build it again on the packed ones
        engine.lean_step = LeanStep(model)
    return engine


@pytest.fixture(scope="module", params=["llama", "qwen2", "llama-packed", "llama-bfloat16"])
def pair(request, tmp_path_factory):
    """The same model twice: decoding through the lean step, and through transformers' forward only."""
    architecture, _, variant = request.param.partition("-")
    packed = variant == "packed"
    dtype = "bfloat16" if variant == "bfloat16" else "float32"
    folder = _tiny(architecture, tmp_path_factory.mktemp(request.param))
    lean = Engine.load(str(folder), device="cpu", dtype=dtype)
    plain = Engine.load(str(folder), device="cpu", dtype=dtype, lean_step=False)
    if packed:
        _pack(lean), _pack(plain)
        # the same blocks in both: the weights were rounded to Q4_1 in place, identically from the same seed
    assert lean.lean_step is not None and plain.lean_step is None
    return lean, plain


def test_lean_greedy_gives_transformers_tokens_and_logits(pair):
    lean, plain = pair
    fast = [s.token.id for s in lean.greedy(PROMPT, max_new_tokens=40, document="g")]
    slow = [s.token.id for s in plain.greedy(PROMPT, max_new_tokens=40, document="g")]
    assert lean._lean_checked is True  # the lean step was checked and used
    assert fast == slow
    # every step's distribution, as kept for healing and backspaces
    lean_tail, plain_tail = lean._state("g").tail, plain._state("g").tail
    assert lean_tail.keys() == plain_tail.keys()
    for position in lean_tail:  # the same ops on the same shapes: the same numbers, to the bit
        assert torch.equal(lean_tail[position], plain_tail[position]), position


def test_the_cache_a_lean_greedy_leaves_serves_the_next_keystroke(pair):
    lean, _ = pair
    continued = PROMPT + lean.generate_text(PROMPT, max_new_tokens=12, document="kept")
    kept = lean.next_tokens(continued + " and", 5, document="kept")  # on the cache the lean steps wrote
    lean.forget("fresh")
    fresh = lean.next_tokens(continued + " and", 5, document="fresh")
    assert [c.token.id for c in kept.choices] == [c.token.id for c in fresh.choices]
    for a, b in zip(kept.choices, fresh.choices):
        assert a.prob == pytest.approx(b.prob, abs=1e-4)


def test_a_keystroke_feeds_its_one_token_through_the_lean_step(pair):
    lean, plain = pair
    for engine in (lean, plain):
        engine.next_tokens(PROMPT, 5, document="typing")
    list(lean.greedy("warm up", max_new_tokens=2, document="check"))  # the one check, done before counting
    stepped = []
    step = lean.lean_step.step
    lean.lean_step.step = lambda token, cache: (stepped.append(token), step(token, cache))[1]
    try:
        fast = lean.next_tokens(PROMPT + " and", 5, document="typing")
    finally:
        del lean.lean_step.step
    slow = plain.next_tokens(PROMPT + " and", 5, document="typing")
    assert len(stepped) == 1  # the new token, on the kept cache
    assert [(c.token.id, c.prob) for c in fast.choices] == [(c.token.id, c.prob) for c in slow.choices]


def test_models_it_does_not_mirror_decode_through_transformers(tiny_models, tiny_sliding_models):
    assert Engine.load(str(tiny_models["gpt2"]), device="cpu").lean_step is None
    assert Engine.load(str(tiny_models["llama"]), device="cpu").lean_step is not None
    sliding = Engine.load(str(tiny_sliding_models["mistral"]), device="cpu")
    # a sliding-window cache is not one the lean step writes into: transformers' forward decodes
    text = sliding.generate_text("one two three", max_new_tokens=4, document="s")
    assert sliding._lean_checked is None and isinstance(text, str)


def test_a_lean_step_that_disagrees_is_dropped_for_good(tmp_path, caplog):
    folder = _tiny("llama", tmp_path / "m")
    engine = Engine.load(str(folder), device="cpu")
    reference = Engine.load(str(folder), device="cpu", lean_step=False)
    broken = engine.lean_step.final_norm
    engine.lean_step.final_norm = lambda x: broken(x) * (1 + 1e-6)  # a step that is off by a rounding
    with caplog.at_level(logging.WARNING, logger="logitls.engine"):
        ids = [s.token.id for s in engine.greedy(PROMPT, max_new_tokens=20, document="g")]
    assert engine._lean_checked is False
    assert "lean decode step differs" in caplog.text
    assert ids == [s.token.id for s in reference.greedy(PROMPT, max_new_tokens=20, document="g")]
