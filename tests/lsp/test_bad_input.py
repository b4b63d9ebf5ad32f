"""Bad requests get clear errors or empty results, and the server keeps serving."""

from __future__ import annotations

import asyncio

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams

from conftest import open_document



async def test_a_batch_of_bad_requests_then_a_good_one(tiny_client, tiny_gpt2_engine):
    open_document(tiny_client, "file:///bad/doc.txt", "one line\nsecond")
    doc = types.TextDocumentIdentifier(uri="file:///bad/doc.txt")
    unknown = types.TextDocumentIdentifier(uri="file:///bad/never-opened.txt")
    requests = [
        tiny_client.text_document_completion_async(types.CompletionParams(text_document=unknown,
                                                                          position=types.Position(line=0, character=0))),
        tiny_client.text_document_completion_async(types.CompletionParams(text_document=doc,
                                                                          position=types.Position(line=9, character=0))),
        tiny_client.text_document_completion_async(types.CompletionParams(text_document=doc,
                                                                          position=types.Position(line=0, character=99))),
        tiny_client.text_document_hover_async(types.HoverParams(text_document=unknown,
                                                                position=types.Position(line=0, character=0))),
        tiny_client.text_document_hover_async(types.HoverParams(text_document=doc,
                                                                position=types.Position(line=5, character=2))),
        tiny_client.workspace_execute_command_async(types.ExecuteCommandParams(command="logitls.generate",
                                                                               arguments=["not an object"])),
        tiny_client.workspace_execute_command_async(types.ExecuteCommandParams(command="logitls.nonsense")),
    ]
    results = await asyncio.gather(*requests, return_exceptions=True)
    for result in results:
        assert isinstance(result, JsonRpcException), result
    assert all(isinstance(r, JsonRpcInvalidParams) for r in results)
    messages = [str(r) for r in results]
    assert "unknown document file:///bad/never-opened.txt" in messages[0]
    assert "line 9 is past the end" in messages[1]
    assert "character 99 is past the end of line 0" in messages[2]
    # settings that make no sense: a warning, nothing else
    tiny_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"logitls": {"topN": "ten", "generate": 5}}))
    good = await tiny_client.text_document_completion_async(types.CompletionParams(
        text_document=doc, position=types.Position(line=1, character=6)))
    assert len(good.items) == 10


async def test_text_longer_than_the_context_window_is_cut_from_the_left(tiny_client, tiny_gpt2_engine):
    text = "word " * 500  # the tiny model's window is 64 tokens
    open_document(tiny_client, "file:///bad/long.txt", text)
    result = await tiny_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri="file:///bad/long.txt"),
        position=types.Position(line=0, character=len(text))))
    expected = [c.id for c in tiny_gpt2_engine.next_tokens(text, 60).choices
                if not c.token.special and not c.token.partial][:10]
    assert [i.data["id"] for i in result.items] == expected
