"""The `weights` setting through `logitls serve`: the default model runs packed by default (`auto`) on
logitls's fp32 block kernel with the exact numbers; torch's bf16 kernel, where the fp32 one is switched
off, is said in the status and under every hover's numbers."""

from __future__ import annotations


from lsprotocol import types

from conftest import open_document, server_status, start_session

TEXT = "The capital of France is Paris"


async def _paris_hover(client, uri: str) -> str:
    open_document(client, uri, TEXT)
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=27)))
    assert "Paris" in hover.contents.value
    return hover.contents.value


def _shown_probability(hover: str) -> float:
    return float(hover.split("p = ", 1)[1].split(" ", 1)[0])


async def test_the_default_model_runs_packed_by_default_with_the_exact_numbers(default_engine):
    client = await start_session({"model": "default"})
    try:
        status = await server_status(client)
        assert status["state"] == "ready" and (status["weights"], status["kernel"]) == ("packed", "fp32")
        assert (status["forward"], status["packedLayers"]) == ("native", 211)
        assert client.statuses[-1]["message"] == \
            "default on cpu, native forward, packed weights (fp32 kernel, 211 layers)"
        hover = await _paris_hover(client, "file:///packed/auto.txt")
        assert hover.endswith("_native forward, packed weights (fp32 kernel, 211 layers)_")  # no warning
        exact = next(s for s in default_engine.token_scores(TEXT).tokens if s.token.text == " Paris")
        assert abs(_shown_probability(hover) - exact.prob) < 1e-3  # equal to the digits shown
    finally:
        await client.shutdown_session()


async def test_torchs_bf16_kernel_is_said_under_the_numbers(default_engine):
    client = await start_session({"model": "default", "weights": "packed"}, env={"LOGITLS_GGUF_KERNEL": "off"})
    try:
        status = await server_status(client)
        assert (status["weights"], status["kernel"]) == ("packed", "bf16")
        assert "packed weights (bf16 kernel, 210 layers)" in client.statuses[-1]["message"]
        hover = await _paris_hover(client, "file:///packed/bf16.txt")
        assert hover.endswith("_native forward, packed weights (bf16 kernel, 210 layers): probabilities move slightly_")
        exact = next(s for s in default_engine.token_scores(TEXT).tokens if s.token.text == " Paris")
        assert abs(_shown_probability(hover) - exact.prob) < 0.03  # close to the exact weights', not equal
    finally:
        await client.shutdown_session()


async def test_exact_weights_say_nothing_extra(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"])})
    try:
        status = await server_status(client)
        assert (status["weights"], status["kernel"]) == ("exact", None)  # auto: not a GGUF
        assert status["forward"] == "transformers"  # GPT-2: not a model family of the native forward
        uri = "file:///packed/plain.txt"
        open_document(client, uri, "The quick brown fox")
        hover = await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=6)))
        assert hover.contents.value.endswith("_transformers forward, exact weights_")
    finally:
        await client.shutdown_session()
