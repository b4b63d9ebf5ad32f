"""textDocument/completion end to end, against `logitls serve` over stdio."""

from __future__ import annotations

import pytest
from lsprotocol import types

from conftest import NOTEBOOK_TEXT, apply_text_edit, open_document, start_session
from logitls.text import percent



def offered(engine, text: str, n: int = 10) -> list[int]:
    """What the menu should hold: the engine's top tokens, less those that cannot be inserted."""
    return [c.id for c in engine.next_tokens(text, 60).choices if not c.token.special and not c.token.partial][:n]


def complete(client, uri: str, line: int, character: int):
    return client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character)))


async def test_items_are_the_engines_top_n_in_probability_order(tiny_client, tiny_gpt2_engine):
    uri = "file:///completion/notebook.txt"
    open_document(tiny_client, uri, NOTEBOOK_TEXT)
    result = await complete(tiny_client, uri, 0, len(NOTEBOOK_TEXT))
    assert result.is_incomplete is True
    expected = [c for c in tiny_gpt2_engine.next_tokens(NOTEBOOK_TEXT, 40).choices
                if not c.token.special and not c.token.partial][:10]
    assert [item.data["id"] for item in result.items] == [c.id for c in expected]
    assert sorted(result.items, key=lambda i: i.sort_text) == list(result.items)
    cursor = types.Position(line=0, character=len(NOTEBOOK_TEXT))
    for item, choice in zip(result.items, expected):
        assert item.text_edit.new_text == item.insert_text == choice.text  # insertText: where textEdit is ignored
        assert item.text_edit.range == types.Range(start=cursor, end=cursor)
        assert item.data["prob"] == pytest.approx(choice.prob, abs=1e-6)
        assert item.label_details.description.endswith("%")
        assert f"rank {choice.rank}" in item.detail and "logprob=" in item.detail
        assert item.detail.startswith(item.label_details.description + "  ")  # the percentage first
        assert " " not in item.label and "\n" not in item.label  # whitespace made visible
        assert item.filter_text.startswith("generative")  # survives the editor's word filter


async def test_top_n_setting_sets_the_menu_size(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"]), "topN": 3})
    try:
        open_document(client, "file:///completion/three.txt", "hello world")
        result = await complete(client, "file:///completion/three.txt", 0, 11)
        assert len(result.items) == 3
    finally:
        await client.shutdown_session()


@pytest.mark.parametrize("encoding, units", [("utf-16", 14), ("utf-8", 17), ("utf-32", 13)])
async def test_positions_follow_the_negotiated_encoding(tiny_models, tiny_gpt2_engine, encoding, units):
    line = "# héllo 😀 wor"
    capabilities = types.ClientCapabilities(general=types.GeneralClientCapabilities(position_encodings=[encoding]))
    client = await start_session({"model": str(tiny_models["gpt2"]), "completion": {"tokenHealing": False}},
                                 capabilities=capabilities)
    try:
        uri = f"file:///completion/{encoding}.txt"
        open_document(client, uri, line + "\nsecond line")
        result = await complete(client, uri, 0, units)  # the end of the first line in that encoding
        expected = offered(tiny_gpt2_engine, line)
        assert [item.data["id"] for item in result.items] == expected
        assert result.items[0].text_edit.range.start == types.Position(line=0, character=units)
        # mid-line, right after the emoji
        after_emoji = {"utf-16": 10, "utf-8": 13, "utf-32": 9}[encoding]
        result = await complete(client, uri, 0, after_emoji)
        expected = offered(tiny_gpt2_engine, "# héllo 😀")
        assert [item.data["id"] for item in result.items] == expected
    finally:
        await client.shutdown_session()


async def test_default_model_offers_paris_first(default_client):
    uri = "file:///completion/france.txt"
    open_document(default_client, uri, "The capital of France is")
    result = await complete(default_client, uri, 0, 24)
    first = result.items[0]
    assert first.label == "␣Paris"
    assert apply_text_edit("The capital of France is", first.text_edit) == "The capital of France is Paris"
    assert first.label_details.description == "77.3%"
    assert all(not item.text_edit.new_text.startswith("<|") for item in result.items)


async def test_special_tokens_are_never_offered(default_client):
    uri = "file:///completion/empty.txt"
    open_document(default_client, uri, "")
    result = await complete(default_client, uri, 0, 0)  # empty text: conditions on <|im_start|>
    assert len(result.items) == 10
    assert not any("<|im_" in item.text_edit.new_text for item in result.items)


async def test_sampling_settings_show_the_p_after_the_samplers_beside_the_models(tiny_models, tiny_gpt2_engine):
    from logitls.engine.sampling import SamplingParams

    client = await start_session({"model": str(tiny_models["gpt2"]), "device": "cpu", "topN": 4,
                                  "completion": {"tokenHealing": False},
                                  "generate": {"sampling": {"temperature": 3, "topK": 3}}})
    try:
        open_document(client, "file:///completion/sampled.txt", NOTEBOOK_TEXT)
        result = await complete(client, "file:///completion/sampled.txt", 0, len(NOTEBOOK_TEXT))
        expected, after = tiny_gpt2_engine.next_tokens_sampled(NOTEBOOK_TEXT, SamplingParams(temperature=3, top_k=3), 4)
        assert [item.data["id"] for item in result.items] == [c.id for c in expected.choices]
        for item, choice, p in zip(result.items, expected.choices, after):
            assert item.detail.startswith(f"{percent(choice.prob)} model p={choice.prob:.4f}")
            assert item.detail.endswith(f" · after temperature 3, top-k 3: {percent(p)}")
            assert item.data["afterSamplers"] == pytest.approx(p)
        assert [item.data["afterSamplers"] > 0 for item in result.items] == [True] * 3 + [False]
    finally:
        await client.shutdown_session()
