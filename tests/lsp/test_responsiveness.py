"""Typing: newer requests supersede older ones, cancellation is honoured mid-computation,
and answers describe the version they were asked for."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcRequestCancelled

from conftest import apply_text_edit, hold_model_thread, open_document, release_model_thread, wait_until_held


LONG_TEXT = "\n".join(f"def function_{i}(value):\n    return value * {i} + sum(range({i}))" for i in range(120))


def completion_at_end(client, uri: str, text: str, msg_id: str | None = None):
    lines = text.split("\n")
    params = types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                    position=types.Position(line=len(lines) - 1, character=len(lines[-1])))
    if msg_id is None:
        return client.text_document_completion_async(params)
    return asyncio.wrap_future(client.protocol.send_request(types.TEXT_DOCUMENT_COMPLETION, params, msg_id=msg_id))


async def test_a_newer_completion_supersedes_an_older_one(default_client):
    uri = "file:///typing/supersede.py"
    open_document(default_client, uri, LONG_TEXT, language="python")
    mark = hold_model_thread(default_client, at_check=2, key_contains=uri)
    first = asyncio.ensure_future(completion_at_end(default_client, uri, LONG_TEXT))
    held = await wait_until_held(default_client, mark)  # the first is now two chunks into its prefill
    assert "supersede.py" in held["key"]
    short_text = "import numpy as"
    default_client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=short_text)]))
    second = asyncio.ensure_future(completion_at_end(default_client, uri, short_text))
    release_model_thread(default_client)
    second = await second
    assert apply_text_edit(short_text, second.items[0].text_edit) == "import numpy as np"  # version 2, not 1
    superseded = await first
    assert superseded.items == [] or list(superseded.items) == []


async def test_cancel_request_stops_a_long_computation(default_client):
    default_client.set_configuration({"logitls": {"logLevel": "debug"}})
    default_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
    uri = "file:///typing/cancel.py"
    open_document(default_client, uri, LONG_TEXT, language="python")
    mark = hold_model_thread(default_client, at_check=2, key_contains=uri)
    request = completion_at_end(default_client, uri, LONG_TEXT, msg_id="long-completion")
    await wait_until_held(default_client, mark)  # two prefill chunks done, more to go
    default_client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="long-completion"))
    release_model_thread(default_client)
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(request, 600)
    open_document(default_client, "file:///typing/next.txt", "The capital of France is")
    result = await asyncio.wait_for(default_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri="file:///typing/next.txt"),
        position=types.Position(line=0, character=24))), 120)
    assert apply_text_edit("The capital of France is", result.items[0].text_edit) == "The capital of France is Paris"
    # the prefill itself stopped mid-way (the server says so in its debug log), it did not run on
    stopped = [m.message for m in default_client.log_messages if "stopped before it finished" in m.message]
    assert any("cancel.py" in m for m in stopped), stopped
    default_client.set_configuration({"logitls": {"logLevel": "info"}})
    default_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))


async def test_incremental_changes_are_applied(tiny_client, tiny_gpt2_engine):
    uri = "file:///typing/incremental.txt"
    open_document(tiny_client, uri, "hello world")
    tiny_client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=0, character=5), end=types.Position(line=0, character=11)),
            text=" there, friend")]))
    result = await tiny_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=19)))
    expected = [c.id for c in tiny_gpt2_engine.next_tokens("hello there, friend", 60).choices
                if not c.token.special and not c.token.partial][:10]
    assert [i.data["id"] for i in result.items] == expected
