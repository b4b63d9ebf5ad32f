"""textDocument/inlineCompletion end to end: ghost text is the greedy continuation to the end of the line."""

from __future__ import annotations

from lsprotocol import types

from conftest import open_document, start_session



def inline(client, uri: str, line: int, character: int):
    return client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))


async def test_inline_completion_is_advertised_and_matches_greedy(default_client, default_engine):
    prompt = "The capital of France is"
    uri = "file:///inline/france.txt"
    open_document(default_client, uri, prompt)
    result = await inline(default_client, uri, 0, len(prompt))
    [item] = result.items
    full = default_engine.generate_text(prompt, max_new_tokens=16)
    assert item.insert_text == full.split("\n")[0] == " Paris."  # cut at the end of the line
    cursor = types.Position(line=0, character=len(prompt))
    assert item.range == types.Range(start=cursor, end=cursor)


async def test_inline_completion_can_be_disabled(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"]), "inline": {"enabled": False}})
    try:
        assert client.initialize_result.capabilities.inline_completion_provider is not None
        open_document(client, "file:///inline/off.txt", "hello")
        result = await inline(client, "file:///inline/off.txt", 0, 5)
        assert result.items == [] or list(result.items) == []
    finally:
        await client.shutdown_session()
