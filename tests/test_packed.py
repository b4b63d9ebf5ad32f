"""Packed weights (engine/packed.py): the GGUF blocks reproduce the exact weights; the engine's answers
through the fp32 block kernel equal the exact ones up to the order of additions, and through torch's
int4 kernel stay within its bf16 rounding; the KV cache included."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import block_layers, tiny_llama_family

from logitls.engine import Engine
from logitls.bench.fidelity import distributions
from logitls.engine import kernels
from logitls.engine.packed import (Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, BlockLinear, FusedSlice,
                                    PackedLinear, apply_packed, build_packed)

TEXT = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n# the quick brown fox jumps over the lazy dog"


def _k_mix(base: int):
    """llama.cpp's Q4_K_M / Q5_K_M mix (here for every layer): attention's v and the MLP's down
    projection in Q6_K, the rest in `base`; the tied head (the embedding) in Q6_K."""
    return lambda name: Q6_K if name.endswith(("v_proj", "down_proj")) else base


# (architecture, linear layers' kind, kernel); K-quants on a 256-wide model (their blocks are 256 weights)
CASES = {"llama-q4_1-fp32": ("llama", Q4_1, "fp32"), "qwen2-q4_1-fp32": ("qwen2", Q4_1, "fp32"),
         "llama-q4_0-fp32": ("llama", Q4_0, "fp32"), "llama-q5_0-fp32": ("llama", Q5_0, "fp32"),
         "qwen2-q5_1-fp32": ("qwen2", Q5_1, "fp32"), "llama-q4_k_m-fp32": ("llama", "q4_k_m", "fp32"),
         "qwen2-q4_k_m-fp32": ("qwen2", "q4_k_m", "fp32"), "qwen2-q5_k_m-fp32": ("qwen2", "q5_k_m", "fp32"),
         "llama-q6_k-fp32": ("llama", Q6_K, "fp32"),
         "llama-q4_1-bf16": ("llama", Q4_1, "bf16"), "qwen2-q4_1-bf16": ("qwen2", Q4_1, "bf16"),
         "llama-q4_0-bf16": ("llama", Q4_0, "bf16")}
MIXES = {"q4_k_m": _k_mix(Q4_K), "q5_k_m": _k_mix(Q5_K)}


@pytest.fixture(scope="module", params=CASES.values(), ids=CASES.keys())
def engines(request, tmp_path_factory):
    """An exact and a packed engine on the same tiny random model (Qwen2: q/k/v with biases)."""
    architecture, kind, kernel = request.param
    if kernel == "fp32":
        assert kernels.available(), kernels.unavailable_reason()  # make setup builds it; a compiler builds it here
    k_quants = kind in MIXES or kind in (Q4_K, Q5_K, Q6_K)
    model, tokenizer = tiny_llama_family(architecture, seed=5, **(dict(hidden_size=256, intermediate_size=512)
                                                                  if k_quants else {}))
    layers = block_layers(model, MIXES.get(kind, kind), head_kind=Q6_K if kind in MIXES else Q8_0)
    folder = tmp_path_factory.mktemp(f"q4-{architecture}")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    exact = Engine.load(str(folder), device="cpu")
    packed = Engine.load(str(folder), device="cpu")
    # torch's int4 kernel takes Q4 layers only: the Q8_0 head stays exact there
    expected = len(layers) if kernel == "fp32" else len(layers) - 1
    assert apply_packed(packed.model, build_packed(packed.model, layers, kernel=kernel)) == expected
    packed.loaded.weights, packed.loaded.kernel = "packed", kernel
    return exact, packed


def test_every_linear_layer_is_packed_and_siblings_are_fused(engines):
    _, packed = engines
    layer = BlockLinear if packed.loaded.kernel == "fp32" else PackedLinear
    modules = dict(packed.model.named_modules())
    # a K-quant mix keeps v in Q6_K: q, k and v then run apart (one call computes blocks of one kind)
    mixed = isinstance(modules["model.layers.0.self_attn.v_proj"], BlockLinear)
    for i in range(2):
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            assert isinstance(modules[f"model.layers.{i}.{name}"], layer if mixed else FusedSlice), name
        for name in ("mlp.gate_proj", "mlp.up_proj"):
            assert isinstance(modules[f"model.layers.{i}.{name}"], FusedSlice), name
        assert isinstance(modules[f"model.layers.{i}.self_attn.o_proj"], layer)
        assert isinstance(modules[f"model.layers.{i}.mlp.down_proj"], layer)
    head = packed.model.get_output_embeddings()
    if packed.loaded.kernel == "fp32":  # the Q8_0 head too, its prefill on the embedding's own dense weight
        assert isinstance(head, BlockLinear)
        assert head.dense[0].data_ptr() == packed.model.get_input_embeddings().weight.data_ptr()
    else:
        assert isinstance(head, torch.nn.Linear)


def _distributions(engine, text, stepwise=False):
    """Every position's log-probabilities: one forward, or (`stepwise`) one token at a time on a KV
    cache, as keystrokes and greedy decoding run (few rows a call); the bench's fidelity uses the same."""
    return distributions(engine, engine.tokenizer(text)["input_ids"], stepwise)


def test_the_fp32_kernel_gives_the_exact_numbers_one_token_at_a_time_and_in_a_prefill(engines):
    exact, packed = engines
    if packed.loaded.kernel != "fp32":
        pytest.skip("torch's int4 kernel rounds to bf16: see the next test")
    # A prefill's many rows take the dense GEMM: bit for bit the exact path.
    assert torch.equal(_distributions(packed, TEXT), _distributions(exact, TEXT))
    # A step's one row runs on the blocks: the same values, only the additions in another order.
    reference, candidate = _distributions(exact, TEXT, stepwise=True), _distributions(packed, TEXT, stepwise=True)
    assert not torch.equal(reference, candidate)  # the blocks really ran
    assert float((reference.exp() - candidate.exp()).abs().max()) < 1e-5
    assert bool((reference.argmax(-1) == candidate.argmax(-1)).all())


def test_packed_distributions_stay_within_the_kernels_bf16_rounding(engines):
    exact, packed = engines
    reference, candidate = _distributions(exact, TEXT), _distributions(packed, TEXT)
    kl = (reference.exp() * (reference - candidate)).sum(dim=-1)
    assert float(kl.mean()) < 5e-3
    assert float((reference.exp() - candidate.exp()).abs().max()) < 0.05
    # Unlike a wrong mapping or permutation, rounding moves no clear winner.
    top2 = reference.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 0.1
    assert bool((reference.argmax(-1) == candidate.argmax(-1))[clear].all())


def test_packed_greedy_follows_the_exact_path(engines):
    exact, packed = engines
    exact_ids = [s.token.id for s in exact.greedy(TEXT, max_new_tokens=24, document="g")]
    packed_ids = [s.token.id for s in packed.greedy(TEXT, max_new_tokens=24, document="g")]
    # Token for token up to the first position where the exact model itself hesitates (a near tie).
    ids = exact.tokenizer(TEXT)["input_ids"]
    for step, token in enumerate(exact_ids):
        logprobs = _distributions(exact, exact.tokenizer.decode(ids + exact_ids[:step]))[-1]
        top2 = logprobs.topk(2).values
        if float(top2[0] - top2[1]) < 0.1:
            break
        assert packed_ids[step] == token, step


def test_kept_cache_with_packed_weights_equals_a_fresh_prefill(engines):
    _, packed = engines
    edited = TEXT.replace("brown", "red")
    packed.next_tokens(TEXT, 5, document="kept")
    packed.next_tokens(TEXT + " and", 5, document="kept")  # a keystroke: one more token on the cache
    kept = packed.next_tokens(edited, 5, document="kept")  # an edit mid-text: the cache is cropped
    packed.forget("fresh")
    fresh = packed.next_tokens(edited, 5, document="fresh")
    assert [c.token.id for c in kept.choices] == [c.token.id for c in fresh.choices]
    for a, b in zip(kept.choices, fresh.choices):
        assert math.isclose(a.prob, b.prob, abs_tol=2e-3)


def test_packed_scores_equal_the_packed_forward(engines):
    _, packed = engines
    scores = packed.token_scores(TEXT, document="scores")
    reference = _distributions(packed, TEXT)
    ids = packed.tokenizer(TEXT)["input_ids"]
    for i in range(1, len(ids)):
        assert scores.tokens[i].logprob == pytest.approx(float(reference[i - 1, ids[i]]), abs=5e-3)


def test_a_folder_model_asked_for_packed_weights_stays_exact_and_says_why(tiny_models):
    engine = Engine.load(str(tiny_models["llama"]), device="cpu", weights="packed")
    assert engine.loaded.weights == "exact"
    assert "GGUF" in engine.loaded.note


@pytest.fixture(scope="module")
def exact_default():
    return Engine.load("default", device="cpu", weights="exact")


def test_the_default_model_is_packed_by_default_with_the_exact_numbers(default_engine, exact_default):
    assert exact_default.loaded.weights == "exact"
    assert default_engine.loaded.weights == "packed" and default_engine.loaded.kernel == "fp32"  # weights: auto
    kinds = [type(m) for m in default_engine.model.modules()]
    # 30 layers: q/k/v and gate/up fused (5 slices), o and down alone, 2 fused groups; and the Q8_0 head
    assert kinds.count(FusedSlice) == 30 * 5 and kinds.count(BlockLinear) == 30 * 2 + 30 * 2 + 1
    exact = exact_default.next_tokens("The capital of France is", 3)
    fast = default_engine.next_tokens("The capital of France is", 3)
    assert [c.token.text for c in fast.choices] == [c.token.text for c in exact.choices]
    for a, b in zip(fast.choices, exact.choices):
        assert a.prob == pytest.approx(b.prob, abs=1e-5)
    # the near tie after "import numpy as np\n" that torch's bf16 kernel resolves the other way: not here
    for prompt in ("The capital of France is", "import numpy as np\n"):
        assert default_engine.generate_text(prompt, max_new_tokens=12) == \
            exact_default.generate_text(prompt, max_new_tokens=12)


def test_auto_stays_exact_where_the_kernel_would_run_its_plain_loop():
    """On a CPU without AVX2 the fp32 kernel's plain loop is slower than the dense BLAS: `auto` is
    exact there (run in a process that takes the plain loop), while `packed` may still be asked for."""
    import os
    import subprocess
    import sys

    code = ("from logitls.engine import Engine; from logitls.engine import kernels; "
            "a = Engine.load('default', device='cpu'); p = Engine.load('default', device='cpu', weights='packed'); "
            "print(kernels.cpu_path(), a.loaded.weights, p.loaded.weights, p.loaded.kernel)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "LOGITLS_GGUF_KERNEL_PLAIN": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain", "exact", "packed", "fp32"]


def test_the_default_models_gguf_codes_pack_into_torchs_int4_kernel_too(exact_default):
    packed = Engine.load("default", device="cpu", weights="exact")
    from logitls.engine.loading import gguf_of
    from logitls.engine.packed import gguf_block_layers

    plan = build_packed(packed.model, gguf_block_layers(gguf_of("default"), packed.model), kernel="bf16")
    assert apply_packed(packed.model, plan) == 30 * 7  # every Q4 layer; the Q8_0 head stays exact
    kinds = [type(m) for m in packed.model.modules()]
    assert kinds.count(FusedSlice) == 30 * 5 and kinds.count(PackedLinear) == 30 * 2 + 30 * 2
    exact = exact_default.next_tokens("The capital of France is", 3)
    fast = packed.next_tokens("The capital of France is", 3)
    assert [c.token.text for c in fast.choices] == [c.token.text for c in exact.choices]
    assert fast.choices[0].prob == pytest.approx(exact.choices[0].prob, abs=0.03)
    assert packed.generate_text("The capital of France is", max_new_tokens=8) == \
        exact_default.generate_text("The capital of France is", max_new_tokens=8)


def _fresh_cache_with_the_default_model(tmp_path, monkeypatch):
    """A cache holding the default model's converted folder without any packed file."""
    import shutil

    from logitls.engine import loading

    folder = loading.converted_folder(loading.default_gguf())
    copy = tmp_path / "converted" / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("packed-*"))
    monkeypatch.setenv("LOGITLS_CACHE_DIR", str(tmp_path))
    return copy


def test_a_bfloat16_start_leaves_float32_packing_intact(tmp_path, monkeypatch):
    from logitls.engine.packed import plan_file

    folder = _fresh_cache_with_the_default_model(tmp_path, monkeypatch)
    half = Engine.load("default", device="cpu", dtype="bfloat16")
    assert half.loaded.weights == "exact" and half.loaded.packed_layers == 0
    assert not plan_file(folder, "fp32").exists()  # nothing written, least of all an empty plan
    asked = Engine.load("default", device="cpu", dtype="bfloat16", weights="packed")
    assert (asked.loaded.weights, asked.loaded.kernel) == ("packed", "bf16")  # torch's int4 kernel, said
    assert "bf16" in asked.loaded.note
    assert not plan_file(folder, "fp32").exists()
    full = Engine.load("default", device="cpu")
    assert (full.loaded.weights, full.loaded.kernel, full.loaded.packed_layers) == ("packed", "fp32", 211)
    again = Engine.load("default", device="cpu")  # from the file written just now
    assert again.loaded.packed_layers == 211 and again.loaded.note == ""
    assert again.next_tokens("The capital of France is", 1).choices[0].token.text == " Paris"


def test_a_packed_file_of_another_key_or_empty_is_built_again(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from logitls.engine.packed import plan_file

    folder = _fresh_cache_with_the_default_model(tmp_path, monkeypatch)
    # what an older version left after a bfloat16 start: a file with no layers and no key
    save_file({}, str(plan_file(folder, "fp32")), metadata={"layout": "[]"})
    engine = Engine.load("default", device="cpu")
    assert (engine.loaded.weights, engine.loaded.packed_layers) == ("packed", 211)
    assert engine.next_tokens("The capital of France is", 1).choices[0].token.text == " Paris"


GGUF_CASES = {"llama-q4_k_m": ("tiny-llama", "q4_k_m"), "qwen2-q5_k_m": ("tiny-qwen2", "q5_k_m"),
              "llama-q6_k": ("tiny-llama", "q6_k"), "qwen2-q5_1": ("tiny-qwen2", "q5_1")}


@pytest.fixture(scope="module", params=GGUF_CASES.values(), ids=GGUF_CASES.keys())
def gguf_engines(request, tmp_path_factory):
    """A random GGUF of a K-quant mix (bench/random_gguf.py, llama-quantize's choice of types) loaded the
    way a user's file is (converted by transformers' GGUF loader, then packed), exact and packed."""
    import os

    from logitls.bench.random_gguf import write

    assert kernels.available(), kernels.unavailable_reason()  # loaded before the cache moves
    shape, file_type = request.param
    folder = tmp_path_factory.mktemp(f"gguf-{shape}-{file_type}")
    gguf = write(shape, folder / f"{shape}.{file_type}.gguf", seed=3, file_type=file_type)
    saved = os.environ.get("LOGITLS_CACHE_DIR")
    os.environ["LOGITLS_CACHE_DIR"] = str(folder / "cache")
    try:
        exact = Engine.load(str(gguf), device="cpu", weights="exact")
        packed = Engine.load(str(gguf), device="cpu", weights="packed")
    finally:
        if saved is None:
            os.environ.pop("LOGITLS_CACHE_DIR")
        else:
            os.environ["LOGITLS_CACHE_DIR"] = saved
    return gguf, exact, packed


def test_a_k_quant_gguf_packs_every_layer_with_the_exact_numbers(gguf_engines):
    from gguf import GGUFReader

    gguf, exact, packed = gguf_engines
    assert packed.loaded.weights == "packed" and packed.loaded.kernel == "fp32"
    kinds = {int(t.tensor_type) for t in GGUFReader(str(gguf)).tensors if len(t.shape) == 2}
    packed_kinds = {m.kind for m in packed.model.modules() if isinstance(m, BlockLinear)}
    assert packed_kinds == kinds  # every kind in the file, the fallback types of 384-wide rows included
    assert not any(type(m) is torch.nn.Linear for m in packed.model.modules())  # every layer, the head too
    ids = exact.tokenizer(TEXT)["input_ids"][:24]
    reference = distributions(exact, ids, True)
    candidate = distributions(packed, ids, True)
    assert not torch.equal(reference, candidate)  # the blocks really ran
    assert float((reference.exp() - candidate.exp()).abs().max()) < 1e-5
    assert torch.equal(distributions(packed, ids, False), distributions(exact, ids, False))  # a prefill: the GEMM
