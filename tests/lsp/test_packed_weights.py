"""The `weights: packed` setting through `logitls serve`: the default model's GGUF codes run packed, and
the status and the hover say that the numbers come from packed weights."""

from __future__ import annotations

from lsprotocol import types

from conftest import open_document, server_status, start_session


async def test_packed_weights_setting_reaches_the_engine_and_is_said(default_engine):
    client = await start_session({"model": "default", "weights": "packed"})
    try:
        status = await server_status(client)
        assert status["state"] == "ready" and status["weights"] == "packed"
        assert "packed weights" in client.statuses[-1]["message"]
        uri = "file:///packed/france.txt"
        text = "The capital of France is Paris"
        open_document(client, uri, text)
        hover = await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=27)))
        assert "Paris" in hover.contents.value and hover.contents.value.endswith("_from packed 4-bit weights_")
        exact = next(s for s in default_engine.token_scores(text).tokens if s.token.text == " Paris")
        shown = float(hover.contents.value.split("p = ", 1)[1].split(" ", 1)[0])
        assert abs(shown - exact.prob) < 0.03  # close to the exact weights' probability, not equal
    finally:
        await client.shutdown_session()


async def test_exact_weights_say_nothing_extra(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"])})
    try:
        assert (await server_status(client))["weights"] == "exact"
        uri = "file:///packed/plain.txt"
        open_document(client, uri, "The quick brown fox")
        hover = await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=6)))
        assert "packed" not in hover.contents.value
    finally:
        await client.shutdown_session()
