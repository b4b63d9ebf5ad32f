"""A GGUF whose matrices the fp32 kernel all reads, loaded straight from its blocks (engine/gguf_direct.py):
no float32 matrix anywhere, and the numbers of transformers' own GGUF loader's float32 model (a prefill
bit for bit, few rows up to the order of the additions)."""

from __future__ import annotations

import pytest
import torch

from logitls.engine import kernels

TEXT = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n# the quick brown fox"


@pytest.fixture(scope="module", params=[("tiny-llama", "q4_k_m"), ("tiny-qwen2", "q5_k_m"), ("tiny-qwen2", "q8_0")],
                ids=["llama-q4_k_m", "qwen2-q5_k_m", "qwen2-q8_0"])
def models(request, tmp_path_factory):
    import os

    from transformers import AutoModelForCausalLM

    from logitls.bench.random_gguf import write
    from logitls.engine.gguf_direct import load_packed

    assert kernels.available(), kernels.unavailable_reason()  # loaded before the cache moves
    shape, file_type = request.param
    folder = tmp_path_factory.mktemp(f"direct-{shape}-{file_type}")
    gguf = write(shape, folder / f"{shape}.{file_type}.gguf", seed=4, file_type=file_type)
    saved = os.environ.get("LOGITLS_CACHE_DIR")
    os.environ["LOGITLS_CACHE_DIR"] = str(folder / "cache")
    try:
        direct = load_packed(gguf)
        again = load_packed(gguf)  # config and tokenizer from the cache now
    finally:
        if saved is None:
            os.environ.pop("LOGITLS_CACHE_DIR")
        else:
            os.environ["LOGITLS_CACHE_DIR"] = saved
    assert direct is not None and again is not None
    reference = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf.name, dtype=torch.float32).eval()
    return direct, again, reference


def test_no_float32_matrix_is_held(models):
    from logitls.engine.gguf_direct import BlockEmbedding
    from logitls.engine.packed import BlockLinear

    (model, _), _, _ = models
    assert not [name for name, p in [*model.named_parameters(), *model.named_buffers()]
                if p.dim() == 2 and p.dtype != torch.uint8]
    assert isinstance(model.get_input_embeddings(), BlockEmbedding)
    assert isinstance(model.get_output_embeddings(), BlockLinear)  # the tied head on the embedding's blocks


def test_the_direct_model_gives_the_loaders_numbers(models):
    (model, tokenizer), (model_again, tokenizer_again), reference = models
    ids = torch.tensor([tokenizer(TEXT)["input_ids"][:40]])
    assert tokenizer_again(TEXT)["input_ids"][:40] == ids[0].tolist()
    with torch.inference_mode():
        expected = reference(ids).logits
        assert torch.equal(model(ids).logits, expected)  # many rows: dequantized tiles through the GEMM
        assert torch.equal(model_again(ids).logits, expected)
        few = model(ids[:, :4]).logits  # few rows: the blocks in registers
        torch.testing.assert_close(few, reference(ids[:, :4]).logits, rtol=0, atol=2e-5 * float(expected.abs().max()))
