"""The native Llama-family model (engine/llama.py): transformers' Llama, Qwen2 and Mistral computed with one
forward of its own. Its logits must be transformers' bit for bit, however a document is fed; it must serve
only where it can be exactly that model; and serving the default model imports nothing of transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_llama_family
from logitls.engine import Engine
from logitls.engine.llama import build, native_config
from logitls.engine.loading import load_model
from logitls.engine.transformers_model import TransformersModel

# how a document reaches the model: one prefill, token by token, and chunks after cached positions
FEEDS = {"prefill": [40], "token by token": [1] * 40, "edits": [7, 1, 20, 12], "two chunks": [16, 24]}
PROBES = ["The capital of France is Paris.", "héllo wörld 😀 \u00e9t\u00e9\n\tx = [1, 2]  # ok",
          "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>", "  two leading spaces\n\n\n", "a", "def main():\n    return 0"]


def _save_tiny(architecture: str, folder, *, plain_tokenizer: bool = True, **config_changes):
    """A tiny random model of the family saved as a folder; with `plain_tokenizer`, its tokenizer saved as
    a converted GGUF's is (the plain TokenizersBackend class that PlainTokenizer loads)."""
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    model, tokenizer = tiny_llama_family("llama" if architecture == "mistral" else architecture, seed=7)
    if architecture == "mistral":
        from transformers import MistralConfig, MistralForCausalLM

        config = MistralConfig(**{k: v for k, v in model.config.to_dict().items() if k in MistralConfig().to_dict()
                                  and k not in ("model_type", "architectures")})
        config.sliding_window = None
        mistral = MistralForCausalLM(config)
        mistral.load_state_dict(model.state_dict())
        model = mistral
    for name, value in config_changes.items():
        setattr(model.config, name, value)
    model.save_pretrained(folder)
    if plain_tokenizer:
        tokenizer = TokenizersBackend(tokenizer_object=tokenizer.backend_tokenizer, bos_token=tokenizer.bos_token,
                                      eos_token=tokenizer.eos_token)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral"])
def tiny_family_folder(request, tmp_path_factory):
    return _save_tiny(request.param, tmp_path_factory.mktemp(f"native-{request.param}"))


def _logits_per_feed(model, ids: list[int], chunks: list[int]) -> list[torch.Tensor]:
    cache, outputs, position = model.new_cache(), [], 0
    with torch.inference_mode():
        for size in chunks:
            outputs.append(model.forward(ids[position: position + size], cache, 0))
            position += size
    return outputs


@pytest.mark.parametrize("feed", FEEDS)
def test_the_native_model_gives_transformers_logits_to_the_bit(tiny_family_folder, feed):
    from transformers import AutoModelForCausalLM

    config = native_config(tiny_family_folder)
    assert config is not None
    reference = TransformersModel(AutoModelForCausalLM.from_pretrained(tiny_family_folder, dtype=torch.float32).eval())
    native = build(tiny_family_folder, config)
    ids = [(7 * i + 3) % 500 for i in range(40)]
    for want, have in zip(_logits_per_feed(reference, ids, FEEDS[feed]), _logits_per_feed(native, ids, FEEDS[feed])):
        assert torch.equal(want, have)


def test_in_bfloat16_it_stays_within_bf16_rounding_of_transformers(tiny_family_folder):
    """Both cast the file's float32 weights to bf16; the ops are the same, so the numbers are too, up to
    bf16's rounding where a kernel picks another order of additions (stated bound: 2e-2 in logits)."""
    from transformers import AutoModelForCausalLM

    reference = TransformersModel(AutoModelForCausalLM.from_pretrained(tiny_family_folder, dtype=torch.bfloat16).eval())
    native = build(tiny_family_folder, native_config(tiny_family_folder), torch.bfloat16)
    ids = [(11 * i + 5) % 500 for i in range(24)]
    for want, have in zip(_logits_per_feed(reference, ids, [10, 1, 1, 12]), _logits_per_feed(native, ids, [10, 1, 1, 12])):
        assert (want - have).abs().max().item() < 2e-2


def _answers(engine) -> list:
    """What a session asks of an engine, in order, on documents of its own (their caches carry state
    from one call to the next, as an editor's do)."""
    text, code = "The capital of France is", "import numpy as np\n"
    return [
        [(c.token.id, c.prob) for c in engine.next_tokens(text, 10, document="native-a").choices],
        [(c.new_text, c.prob) for c in engine.healed_next_tokens(text + " Pa", 5, document="native-a").choices],
        engine.generate_text(code, max_new_tokens=12, document="native-b"),
        [(s.token.id, s.prob, s.rank) for s in engine.token_scores(code + "x = np.zeros(3)", document="native-b").tokens],
    ]


def test_the_default_model_serves_natively_packed_with_transformers_numbers(default_engine):
    assert (default_engine.loaded.forward, default_engine.loaded.weights, default_engine.loaded.kernel) == \
        ("native", "packed", "fp32")
    assert default_engine.loaded.packed_layers == 30 * 7 + 1  # every Q4_1 layer and the Q8_0 head
    reference = Engine.load("default", device="cpu", forward="transformers")
    assert (reference.loaded.forward, reference.loaded.weights) == ("transformers", "packed")
    mine = _answers(default_engine)
    assert default_engine.token(mine[0][0][0]).text == " Paris"
    assert mine == _answers(reference)


def test_a_first_answer_imports_nothing_of_transformers():
    script = (
        "import sys\n"
        "from logitls.engine import Engine\n"
        "engine = Engine.load('default', threads=2)\n"
        "print(engine.next_tokens('The capital of France is', 3).choices[0].token.text)\n"
        "heavy = [m for m in ('transformers', 'torch._dynamo', 'torch.distributed.tensor') if m in sys.modules]\n"
        "print('imported:', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [" Paris", "imported: []"]


def test_it_serves_only_where_it_is_exactly_the_model(tmp_path, tiny_models, tiny_sliding_models):
    plain = _save_tiny("llama", tmp_path / "plain")
    assert load_model(str(plain), device="cpu").forward == "native"
    assert load_model(str(plain), device="cpu", dtype="bfloat16").forward == "native"
    assert load_model(str(tiny_models["llama"]), device="cpu").forward == "native"  # transformers' tokenizer class
    assert load_model(str(tiny_models["gpt2"]), device="cpu").forward == "transformers"  # another architecture
    assert load_model(str(tiny_sliding_models["mistral"]), device="cpu").forward == "transformers"  # sliding window
    assert load_model(str(plain), device="cpu", forward="transformers").forward == "transformers"
    with pytest.raises(Exception, match="native model cannot load"):
        load_model(str(tiny_models["gpt2"]), device="cpu", forward="native")
    rope = tmp_path / "rope"
    shutil.copytree(plain, rope)
    config = json.loads((rope / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    (rope / "config.json").write_text(json.dumps(config))
    assert native_config(rope) is None
    assert load_model(str(rope), device="cpu").forward == "transformers"


def test_the_plain_tokenizer_is_transformers_own_for_the_default_model(default_engine):
    from transformers import AutoTokenizer

    from logitls.engine.plain_tokenizer import PlainTokenizer, same_tokenizer

    mine = default_engine.tokenizer
    theirs = AutoTokenizer.from_pretrained(default_engine.loaded.source)
    assert isinstance(mine, PlainTokenizer) and not isinstance(theirs, PlainTokenizer)
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert same_tokenizer(mine, theirs, [*PROBES, readme[:20000]])
    every = list(range(len(theirs)))  # every token's text, as the healing vocabulary is built from them
    assert mine.batch_decode([[i] for i in every]) == theirs.batch_decode(
        [[i] for i in every], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert mine.convert_ids_to_tokens(every) == theirs.convert_ids_to_tokens(every)
    assert mine.get_vocab() == theirs.get_vocab()


def test_the_plain_tokenizer_declines_what_transformers_would_change(tmp_path):
    from logitls.engine.plain_tokenizer import PlainTokenizer

    plain = _save_tiny("llama", tmp_path / "plain")
    assert PlainTokenizer.load(plain) is not None
    for name, change in {
        "bos added by transformers": lambda config, tokenizer: config.update(add_bos_token=True),
        "a special token not in the vocabulary": lambda config, tokenizer: config.update(pad_token="<pad>"),
        "padding": lambda config, tokenizer: tokenizer.update(padding={"strategy": "BatchLongest", "direction": "Right",
                                                                       "pad_to_multiple_of": None, "pad_id": 0,
                                                                       "pad_type_id": 0, "pad_token": "!"}),
    }.items():
        folder = tmp_path / name.replace(" ", "-")
        shutil.copytree(plain, folder)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
        change(config, tokenizer)
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
        assert PlainTokenizer.load(folder) is None, name
        assert load_model(str(folder), device="cpu").tokenizer.__class__.__name__ != "PlainTokenizer"


@pytest.mark.parametrize("prompt", ["The capital of France is", "def add(a, b):\n", "a"])
def test_the_gpu_decode_path_uncompiled_gives_generates_tokens(tiny_models, prompt):
    """The CUDA-graph path (the native step on a static cache), run uncompiled on CPU: transformers'
    `generate`'s tokens, and the document's cache left as it was for the next keystroke."""
    from conftest import reference_model

    engine = Engine.load(str(tiny_models["llama"]), device="cpu", static_decode=True)
    assert engine.static_decoder is not None and not engine.static_decoder.compiled
    ids = torch.tensor([engine.tokenize(prompt).ids])
    reference = reference_model(engine).generate(ids, do_sample=False, max_new_tokens=20, eos_token_id=None,
                                                 pad_token_id=0)[0, ids.shape[1]:].tolist()
    engine.eos_ids = set()
    assert [s.token.id for s in engine.greedy(prompt, max_new_tokens=20, document="gpu")] == reference
    assert engine.next_tokens(prompt, 3, document="gpu").choices[0].id == reference[0]
