"""The lean stand-in (engine/lean_model.py): transformers' Llama, Qwen2 and Mistral computed without
transformers' modeling code, so the server's first answers need none of its imports. Its logits must be
transformers' bit for bit, however a document is fed; it must stand in only where it can be exactly that
model; and `Engine.adopt` must hand over to transformers' model keeping every cache, or drop them all."""

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
from logitls.engine.growable_cache import new_document_cache
from logitls.engine.lean_model import build, lean_config
from logitls.engine.loading import load_lean_model

# how a document reaches the model: one prefill, token by token, and chunks after cached positions
FEEDS = {"prefill": [40], "token by token": [1] * 40, "edits": [7, 1, 20, 12], "two chunks": [16, 24]}


def _save_tiny(architecture: str, folder, *, plain_tokenizer: bool = True, **config_changes):
    """A tiny random model of the family saved as a folder; with `plain_tokenizer`, its tokenizer saved as
    a converted GGUF's is (the plain TokenizersBackend class that a lean stand-in can load)."""
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
    return _save_tiny(request.param, tmp_path_factory.mktemp(f"lean-{request.param}"))


def _logits_per_feed(model, config, ids: list[int], chunks: list[int]) -> list[torch.Tensor]:
    cache = new_document_cache(config)
    outputs, position = [], 0
    with torch.inference_mode():
        for size in chunks:
            part = torch.tensor([ids[position: position + size]])
            outputs.append(model(input_ids=part, cache=cache, logits_to_keep=0, use_cache=True).logits)
            position += size
    return outputs


@pytest.mark.parametrize("feed", FEEDS)
def test_the_stand_in_gives_transformers_logits_to_the_bit(tiny_family_folder, feed):
    from transformers import AutoModelForCausalLM

    config = lean_config(tiny_family_folder)
    assert config is not None
    reference = AutoModelForCausalLM.from_pretrained(tiny_family_folder, dtype=torch.float32).eval()
    lean = build(tiny_family_folder, config)
    ids = [(7 * i + 3) % 500 for i in range(40)]
    expected = _logits_per_feed(reference, reference.config, ids, FEEDS[feed])
    # the stand-in's own cache, as the documents it served hold it when transformers' model takes over
    got = _logits_per_feed(lean, config, ids, FEEDS[feed])
    for want, have in zip(expected, got):
        assert torch.equal(want, have)


def _answers(engine) -> list:
    """What a session asks of an engine, in order, on documents of its own (their caches carry state
    from one call to the next, as an editor's do)."""
    text, code = "The capital of France is", "import numpy as np\n"
    return [
        [(c.token.id, c.prob) for c in engine.next_tokens(text, 10, document="lean-a").choices],
        [(c.new_text, c.prob) for c in engine.healed_next_tokens(text + " Pa", 5, document="lean-a").choices],
        engine.generate_text(code, max_new_tokens=12, document="lean-b"),
        [(s.token.id, s.prob, s.rank) for s in engine.token_scores(code + "x = np.zeros(3)", document="lean-b").tokens],
    ]


def test_the_default_model_stands_in_packed_and_answers_as_the_full_load_does(default_engine):
    lean = Engine.load_lean("default", threads=2)
    assert lean is not None
    assert (lean.loaded.forward, lean.loaded.weights, lean.loaded.kernel) == ("lean", "packed", "fp32")
    mine = _answers(lean)
    assert lean.token(mine[0][0][0]).text == " Paris"
    assert mine == _answers(default_engine)


def test_a_first_answer_imports_nothing_of_transformers():
    script = (
        "import sys\n"
        "from logitls.engine import Engine\n"
        "engine = Engine.load_lean('default', threads=2)\n"
        "print(engine.next_tokens('The capital of France is', 3).choices[0].token.text)\n"
        "heavy = [m for m in ('transformers', 'torch._dynamo', 'torch.distributed.tensor') if m in sys.modules]\n"
        "print('imported:', heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [" Paris", "imported: []"]


def test_it_stands_in_only_where_it_is_exactly_the_model(tmp_path, tiny_models, tiny_sliding_models):
    plain = _save_tiny("llama", tmp_path / "plain")
    assert load_lean_model(str(plain)).forward == "lean"
    assert load_lean_model(str(plain), dtype="bfloat16") is None  # transformers' cast is not mirrored
    assert load_lean_model(str(tiny_models["gpt2"])) is None  # another architecture
    assert load_lean_model(str(tiny_models["llama"])) is None  # GPT2Tokenizer: AutoTokenizer's own class
    assert load_lean_model(str(tiny_sliding_models["mistral"])) is None  # sliding-window layers
    assert load_lean_model("openai-community/gpt2") is None  # a hub id: not a local folder
    half = _save_tiny("llama", tmp_path / "half")
    from safetensors.torch import load_file, save_file

    weights = load_file(half / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, half / "model.safetensors", metadata={"format": "pt"})
    assert load_lean_model(str(half)) is None  # bf16 in the file: a float32 copy would be a second model in memory
    rope = tmp_path / "rope"
    shutil.copytree(plain, rope)
    config = json.loads((rope / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    (rope / "config.json").write_text(json.dumps(config))
    assert lean_config(rope) is None


def test_without_its_packed_blocks_file_the_default_model_is_left_to_the_full_load(tmp_path, monkeypatch):
    from logitls.engine import loading
    from logitls.engine.packed import plan_file

    folder = loading.converted_folder(loading.default_gguf())
    copy = tmp_path / "converted" / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns(plan_file(folder).name))
    monkeypatch.setenv("LOGITLS_CACHE_DIR", str(tmp_path))
    assert load_lean_model("default") is None  # load_model writes the file; the next start stands in
    assert load_lean_model("default", weights="exact").forward == "lean"


def test_adopting_transformers_model_keeps_every_cached_document(default_engine):
    engine = Engine.load_lean("default", threads=2)
    text = "def fibonacci(n):\n    "
    before = engine.next_tokens(text, 5, document="a")
    engine.next_tokens("The capital of France is", 5, document="b")
    full = engine.load_transformers_model(threads=2)
    assert engine.adopt(full) is True
    assert engine.loaded.forward == "transformers" and engine.model is full.model
    assert engine.cached_documents_keys() == ["a", "b"]
    fed = []
    original = full.model.forward
    full.model.forward = lambda *a, **k: (fed.append(k["input_ids"].shape[1]), original(*a, **k))[1]
    again = engine.next_tokens(text, 5, document="a")  # from the carried cache: nothing to feed
    assert fed == [] and [(c.token.id, c.prob) for c in again.choices] == [(c.token.id, c.prob) for c in before.choices]
    typed = engine.next_tokens(text + "if", 5, document="a")  # the carried cache takes the next token
    assert sum(fed) <= 2
    default_engine.next_tokens(text, 5, document="adopt-reference")  # the same feeds, transformers' all along
    reference = default_engine.next_tokens(text + "if", 5, document="adopt-reference")
    assert [(c.token.id, c.prob) for c in typed.choices] == [(c.token.id, c.prob) for c in reference.choices]


def test_a_model_that_differs_drops_the_cached_documents(caplog):
    engine = Engine.load_lean("default", threads=2)
    engine.next_tokens("The capital of France is", 5, document="a")
    full = engine.load_transformers_model(threads=2)
    with torch.no_grad():
        full.model.model.norm.weight.mul_(1.001)  # another model behind the same folder, as a changed transformers would be
    with caplog.at_level("WARNING", logger="logitls.engine"):
        assert engine.adopt(full) is False
    assert engine.cached_documents_keys() == []
    assert "differ" in caplog.text
    assert engine.model is full.model  # from now on the numbers are transformers' model's


def test_the_stand_ins_tokenizer_is_transformers_own_for_the_default_model(default_engine):
    from logitls.engine.engine import PROBE_TEXT, TOKENIZER_PROBES
    from logitls.engine.lean_tokenizer import LeanTokenizer, same_tokenizer

    lean = Engine.load_lean("default", threads=2)
    mine, theirs = lean.tokenizer, default_engine.tokenizer
    assert isinstance(mine, LeanTokenizer) and not isinstance(theirs, LeanTokenizer)
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert same_tokenizer(mine, theirs, [PROBE_TEXT, *TOKENIZER_PROBES, readme[:20000]])
    every = list(range(len(theirs)))  # every token's text, as the healing vocabulary is built from them
    assert mine.batch_decode([[i] for i in every]) == theirs.batch_decode(
        [[i] for i in every], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert mine.convert_ids_to_tokens(every) == theirs.convert_ids_to_tokens(every)
    assert mine.get_vocab() == theirs.get_vocab()


def test_the_stand_ins_tokenizer_declines_what_transformers_would_change(tmp_path):
    from logitls.engine.lean_tokenizer import LeanTokenizer

    plain = _save_tiny("llama", tmp_path / "plain")
    assert LeanTokenizer.load(plain) is not None
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
        assert LeanTokenizer.load(folder) is None, name


def test_a_tokenizer_that_differs_is_replaced_with_every_cached_document(caplog):
    engine = Engine.load_lean("default", threads=2)
    engine.next_tokens("The capital of France is", 5, document="a")
    full = engine.load_transformers_model(threads=2)
    from conftest import build_gpt2_tokenizer

    full.tokenizer = build_gpt2_tokenizer()  # another tokenizer behind the same folder
    with caplog.at_level("WARNING", logger="logitls.engine"):
        assert engine.adopt(full) is False
    assert "tokenizer differs" in caplog.text
    assert engine.tokenizer is full.tokenizer and engine.cached_documents_keys() == []
    assert engine.tokenize("Udacity").ids == list(full.tokenizer("Udacity")["input_ids"])  # derived state follows
