"""The base protocol's framing read robustly (lsp/framing.py), through `logitls serve` over stdio:
header names in any case and spacing, resynchronisation after a body whose Content-Length is wrong,
and a size limit answered with an error instead of MemoryError."""

from __future__ import annotations

import json

from lsprotocol import types

from conftest import Wire, open_document, server_text_is, start_session

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND = -32700, -32600, -32601


def ping(msg_id) -> bytes:
    """A request the server answers at once (MethodNotFound): proof it read the message."""
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "logitls/no-such-method"}).encode()


def framed(body: bytes, header: bytes = b"Content-Length: %d\r\n\r\n", delta: int = 0) -> bytes:
    return (header % (len(body) + delta) if b"%d" in header else header) + body


async def test_headers_in_any_case_and_spacing_are_read(tiny_client):
    wire = Wire(tiny_client)
    variants = {
        "lowercase": b"content-length: %d\r\n\r\n",
        "no-space": b"Content-Length:%d\r\n\r\n",
        "spaces-and-tabs": b"CONTENT-LENGTH \t:  %d \r\n\r\n",
        "content-type-first": b"content-type: application/vscode-jsonrpc; charset=utf-8\r\nContent-Length: %d\r\n\r\n",
        "unknown-header": b"Content-Length: %d\r\nX-Editor: 1\r\n\r\n",
        "lf-only": b"Content-Length: %d\n\n",
    }
    for msg_id, header in variants.items():
        wire.send_raw(framed(ping(msg_id), header))
    await wire.until(list(variants))
    assert {msg_id: wire.code(msg_id) for msg_id in variants} == dict.fromkeys(variants, METHOD_NOT_FOUND)


async def test_after_a_body_of_the_wrong_length_the_next_messages_are_read(tiny_client, tiny_gpt2_engine):
    wire = Wire(tiny_client)
    text = "one line\nsecond"
    open_document(tiny_client, "file:///framing/doc.txt", text)
    # Content-Length 5 more than the body: the body and the next header's first 5 bytes are read as one
    wire.send_raw(framed(ping("too-long"), delta=5) + framed(ping("after-too-long")))
    # 5 less: the body is cut; its last 5 bytes come before the next header
    wire.send_raw(framed(ping("too-short"), delta=-5) + framed(ping("after-too-short")))
    # a length no one can hold in memory, with a small body after it
    wire.send_raw(framed(ping("huge"), b"Content-Length: 1000000000000\r\n\r\n") + framed(ping("after-huge")))
    # noise between messages
    wire.send_raw(b"\r\n\r\nnot a header\r\n" + framed(ping("after-noise")))
    await wire.until(["too-long", "after-too-long", "after-too-short", "huge", "after-huge", "after-noise"], nulls=1)
    await wire.round_trip()
    assert wire.code("too-long") == PARSE_ERROR  # its id is known: answered, not left waiting
    assert wire.code("huge") == INVALID_REQUEST and "more than the" in wire.answers["huge"][0][1].message
    assert [e.code for e in wire.null_answers] == [PARSE_ERROR]  # the cut body: no id to answer with
    for msg_id in ("after-too-long", "after-too-short", "after-huge", "after-noise"):
        assert wire.code(msg_id) == METHOD_NOT_FOUND
    assert not wire.answers.get("too-short")
    # the server still serves, and still has the document as the client has it
    await server_text_is(tiny_client, "file:///framing/doc.txt", text, tiny_gpt2_engine)
    good = await tiny_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri="file:///framing/doc.txt"),
        position=types.Position(line=1, character=6)))
    assert len(good.items) == 10
    assert tiny_client._server.returncode is None


async def test_a_message_over_the_limit_is_answered_and_skipped(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"]), "device": "cpu"},
                                 args=("--max-message-bytes", "16384"))
    try:
        wire = Wire(client)
        big = "word " * 5000
        request = {"jsonrpc": "2.0", "id": "big", "method": "logitls/no-such-method", "params": {"text": big}}
        wire.send(request)
        open_document(client, "file:///framing/big.txt", big)  # a notification: answered with "id": null
        wire.send_raw(framed(ping("after-big")))
        await wire.until(["big", "after-big"], nulls=1)
        assert wire.code("big") == INVALID_REQUEST
        assert [e.code for e in wire.null_answers] == [INVALID_REQUEST]
        assert "logitls serve --max-message-bytes" in wire.null_answers[0].message
        assert wire.code("after-big") == METHOD_NOT_FOUND
        told = [m.message for m in client.messages if "was not read" in m.message]
        assert len(told) == 2 and "--max-message-bytes" in told[0]
        open_document(client, "file:///framing/small.txt", "small")  # under the limit: read
        result = await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri="file:///framing/small.txt"),
            position=types.Position(line=0, character=5)))
        assert result.items
    finally:
        await client.shutdown_session()


def test_the_cli_default_is_the_servers():
    from logitls import cli
    from logitls.lsp.framing import DEFAULT_MAX_MESSAGE_BYTES

    assert cli.DEFAULT_MAX_MESSAGE_BYTES == DEFAULT_MAX_MESSAGE_BYTES >= 50 * 2**20 * 2
