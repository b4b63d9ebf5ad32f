"""The lean decode step (engine/decode_step.py): greedy through it is model.generate token for token,
leaves the document's cache as transformers' forward would, and gives way where it does not apply."""

from __future__ import annotations

import pytest
import torch

from conftest import build_gpt2_tokenizer, save_sharpened

TEXT = "The quick brown fox jumps over the lazy dog and the cat"


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> dict:
    """The tiny Llama, and a tiny Qwen2 (q/k/v with biases, another head size)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    torch.manual_seed(7)
    qwen2 = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, bos_token_id=eos, eos_token_id=eos,
                                         tie_word_embeddings=True))
    with torch.no_grad():
        for name, parameter in qwen2.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.2)
    return {"llama": tiny_models["llama"], **save_sharpened({"qwen2": qwen2}, tokenizer,
                                                            tmp_path_factory.mktemp("qwen2"))}


def generate_ids(engine, text: str, new: int) -> list[int]:
    ids = engine.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = engine.model.generate(ids, max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_greedy_through_the_lean_step_is_generate_token_for_token(models, name):
    from logitls.engine import Engine

    engine = Engine.load(str(models[name]), device="cpu")
    engine.eos_ids = set()
    assert engine.decode_step is not None
    ours = [s.token.id for s in engine.greedy(TEXT, max_new_tokens=20, document="d")]
    assert engine.decode_step.verified and engine.decode_step.enabled  # checked once, then used
    assert ours == generate_ids(engine, TEXT, 20)
    # the document's cache holds what transformers' forward would have put there: a keystroke on the
    # generated text reads the same distribution as a fresh document
    continued = engine.tokenizer.decode(engine.tokenizer(TEXT)["input_ids"] + ours)
    kept = engine.next_tokens(continued, 5, document="d")
    fresh = engine.next_tokens(continued, 5, document="fresh")
    assert [c.token.id for c in kept.choices] == [c.token.id for c in fresh.choices]
    for a, b in zip(kept.choices, fresh.choices):
        assert a.prob == pytest.approx(b.prob, abs=1e-5)


def test_a_step_that_disagrees_with_the_forward_is_switched_off(models):
    """A lean step that computed something else (here its fused q/k/v matrix no longer matches the
    model's own layers) is caught on first use; greedy then runs on the model's forward, unchanged."""
    from logitls.engine import Engine

    engine = Engine.load(str(models["llama"]), device="cpu")
    engine.eos_ids = set()
    layer, attn, mlp, (modules, weight, bias), fused_mlp = engine.decode_step.layers[0]
    engine.decode_step.layers[0] = (layer, attn, mlp, (modules, weight.clone() * 1.5, bias), fused_mlp)
    ours = [s.token.id for s in engine.greedy(TEXT, max_new_tokens=12, document="d")]
    assert not engine.decode_step.enabled
    assert ours == generate_ids(engine, TEXT, 12)


def test_models_it_does_not_fit_keep_their_forward(tiny_models, tiny_sliding_models):
    from logitls.engine import Engine

    for path in (tiny_models["gpt2"], tiny_sliding_models["mistral"], tiny_sliding_models["gemma2"]):
        assert Engine.load(str(path), device="cpu").decode_step is None, path
