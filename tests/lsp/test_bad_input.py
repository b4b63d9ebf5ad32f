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


# -- malformed messages on the wire: every request gets exactly one answer -----------------------

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602


def hover_request(msg_id, position, uri="file:///wire/doc.txt"):
    return {"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/hover",
            "params": {"textDocument": {"uri": uri}, "position": position}}


# (id, body, the error code its one answer carries)
BAD_REQUESTS = [
    ("null-params", {"jsonrpc": "2.0", "id": "null-params", "method": "textDocument/hover", "params": None},
     INVALID_PARAMS),
    ("no-params", {"jsonrpc": "2.0", "id": "no-params", "method": "textDocument/completion"}, INVALID_PARAMS),
    ("negative", hover_request("negative", {"line": 0, "character": -2}), INVALID_PARAMS),
    ("huge", hover_request("huge", {"line": 0, "character": 2 ** 40}), INVALID_PARAMS),
    ("huge-line", hover_request("huge-line", {"line": 2 ** 31, "character": 0}), INVALID_PARAMS),
    ("string-line", hover_request("string-line", {"line": "0", "character": 0}), INVALID_PARAMS),
    ("float-char", hover_request("float-char", {"line": 0, "character": 1.5}), INVALID_PARAMS),
    ("bool-char", hover_request("bool-char", {"line": 0, "character": True}), INVALID_PARAMS),
    ("no-position", {"jsonrpc": "2.0", "id": "no-position", "method": "textDocument/hover",
                     "params": {"textDocument": {"uri": "file:///wire/doc.txt"}}}, INVALID_PARAMS),
    ("number-uri", hover_request("number-uri", {"line": 0, "character": 0}, uri=5), INVALID_PARAMS),
    ("hover-with-a-command", {"jsonrpc": "2.0", "id": "hover-with-a-command", "method": "textDocument/hover",
                              "params": {"command": "logitls.generate", "arguments": [1, 2]}}, INVALID_PARAMS),
    ("scalar-params", {"jsonrpc": "2.0", "id": "scalar-params", "method": "textDocument/hover", "params": 7},
     INVALID_PARAMS),
    ("arguments-not-a-list", {"jsonrpc": "2.0", "id": "arguments-not-a-list", "method": "workspace/executeCommand",
                              "params": {"command": "logitls.documentStats", "arguments": 5}}, INVALID_PARAMS),
    ("range-negative", {"jsonrpc": "2.0", "id": "range-negative", "method": "textDocument/semanticTokens/range",
                        "params": {"textDocument": {"uri": "file:///wire/doc.txt"},
                                   "range": {"start": {"line": 0, "character": 0},
                                             "end": {"line": -1, "character": 0}}}}, INVALID_PARAMS),
    (7001, {"jsonrpc": "2.0", "id": 7001, "method": "logitls/nonsense", "params": {}}, METHOD_NOT_FOUND),
    ("a-notification-as-a-request", {"jsonrpc": "2.0", "id": "a-notification-as-a-request",
                                     "method": "textDocument/didClose",
                                     "params": {"textDocument": {"uri": "file:///wire/doc.txt"}}}, METHOD_NOT_FOUND),
    ("no-method", {"jsonrpc": "2.0", "id": "no-method", "params": {}}, INVALID_REQUEST),
    ("old-jsonrpc", {"jsonrpc": "1.0", "id": "old-jsonrpc", "method": "textDocument/hover",
                     "params": {"textDocument": {"uri": "file:///wire/doc.txt"},
                            "position": {"line": 0, "character": 0}}}, INVALID_REQUEST),
    ("no-jsonrpc", {"id": "no-jsonrpc", "method": "shutdown"}, INVALID_REQUEST),
    ("method-number", {"jsonrpc": "2.0", "id": "method-number", "method": 5}, INVALID_REQUEST),
    ("initialize-twice", {"jsonrpc": "2.0", "id": "initialize-twice", "method": "initialize",
                          "params": {"processId": None, "rootUri": None, "capabilities": {}}}, INVALID_REQUEST),
    # bytes that are not UTF-8: the id can still be read, so the request is answered, as unparseable
    ("bad-utf8", b'{"jsonrpc": "2.0", "id": "bad-utf8", "method": "textDocument/hover", "params": '
                 b'{"textDocument": {"uri": "file:///wire/\xff\xfe.txt"}, "position": {"line": 0, "character": 0}}}',
     PARSE_ERROR),
]

# Bodies no request id can be read from: each answered once, with "id": null.
UNANSWERABLE = [
    b'{"jsonrpc": "2.0", "id": "cut-short", "method": "textDocument/hov',  # not JSON
    b'\xff\xfe\x00garbage',  # not UTF-8, not JSON
    b"[]",  # a batch: not part of LSP
    b"42",
    b'{"jsonrpc": "2.0", "id": {"an": "object"}, "method": "textDocument/hover"}',  # an id must be a string or an integer
    b'{"jsonrpc": "2.0", "id": true, "method": "shutdown"}',
    b'{"jsonrpc": "2.0", "method": 12}',  # no id, and no method either
]

# Notifications with bad params: dropped, no answer; the document is unchanged.
BAD_NOTIFICATIONS = [
    {"jsonrpc": "2.0", "method": "textDocument/didChange", "params": None},
    {"jsonrpc": "2.0", "method": "textDocument/didChange",
     "params": {"textDocument": {"uri": "file:///wire/doc.txt", "version": 2},
                "contentChanges": [{"range": {"start": {"line": 0, "character": -1},
                                              "end": {"line": 0, "character": 0}}, "text": "X"}]}},
    {"jsonrpc": "2.0", "method": "textDocument/didChange",
     "params": {"textDocument": {"uri": "file:///wire/doc.txt", "version": 2},
                "contentChanges": [{"range": {"start": {"line": 0, "character": 0},
                                              "end": {"line": 0, "character": 0}}, "text": 5}]}},
    {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {"uri": "file:///wire/doc.txt"}}},
    {"jsonrpc": "2.0", "method": "textDocument/didClose", "params": {"textDocument": 3}},
    {"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": {"no": "id"}}},
    {"jsonrpc": "2.0", "method": "logitls/unknown-notification", "params": [1, 2]},
    {"jsonrpc": "2.0", "method": "textDocument/hover",  # a request without its id
     "params": {"textDocument": {"uri": "file:///wire/doc.txt"}, "position": {"line": 0, "character": 0}}},
    b'{"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"textDocument": {"uri": '
    b'"file:///wire/doc.txt", "version": 3}, "contentChanges": [{"text": "\xc3\x28"}]}}',  # not UTF-8
]


async def test_every_malformed_request_gets_exactly_one_answer(tiny_client, tiny_gpt2_engine):
    from conftest import Wire, server_text_is

    wire = Wire(tiny_client)
    text = "one line\nsecond"
    open_document(tiny_client, "file:///wire/doc.txt", text)
    for body in BAD_NOTIFICATIONS:
        wire.send(body)
    for _, body, _ in BAD_REQUESTS:
        wire.send(body)
    for body in UNANSWERABLE:
        wire.send(body)
    ids = [msg_id for msg_id, _, _ in BAD_REQUESTS]
    await wire.until(ids, nulls=len(UNANSWERABLE))
    await wire.round_trip()
    codes = {msg_id: wire.code(msg_id) for msg_id in ids}  # wire.code asserts one answer
    assert codes == {msg_id: code for msg_id, _, code in BAD_REQUESTS}
    assert [e.code for e in wire.null_answers] == [PARSE_ERROR, PARSE_ERROR] + [INVALID_REQUEST] * 5
    # the dropped notifications changed nothing, and the server still serves
    await server_text_is(tiny_client, "file:///wire/doc.txt", text, tiny_gpt2_engine)
    good = await tiny_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri="file:///wire/doc.txt"),
        position=types.Position(line=1, character=6)))
    assert len(good.items) == 10
    assert tiny_client._server.returncode is None


async def test_a_character_past_the_end_of_a_line_means_its_end(tiny_client):
    """The spec: 'If the character value is greater than the line length it defaults back to the line length'."""
    open_document(tiny_client, "file:///wire/clamp.txt", "one line\r\nsecond")
    doc = types.TextDocumentIdentifier(uri="file:///wire/clamp.txt")
    past = await tiny_client.text_document_completion_async(types.CompletionParams(
        text_document=doc, position=types.Position(line=0, character=99)))
    at_end = await tiny_client.text_document_completion_async(types.CompletionParams(
        text_document=doc, position=types.Position(line=0, character=8)))
    between_cr_and_lf = await tiny_client.text_document_completion_async(types.CompletionParams(
        text_document=doc, position=types.Position(line=0, character=9)))
    assert [i.label for i in past.items] == [i.label for i in at_end.items] == [i.label for i in between_cr_and_lf.items]


async def test_requests_before_initialize_and_after_shutdown_are_refused(tiny_models):
    """LSP: before `initialize`, requests get ServerNotInitialized and notifications are dropped; after
    `shutdown`, requests get InvalidRequest. Each still gets its one answer."""
    import os

    from pytest_lsp.client import make_test_lsp_client

    from conftest import SERVER_COMMAND

    client = make_test_lsp_client()
    await client.start_io(*SERVER_COMMAND, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    try:
        await _before_and_after(client, tiny_models)
    finally:
        if client._server.returncode is None:  # failed midway: stop() would wait for it forever
            client._server.terminate()
        await client.stop()


async def _before_and_after(client, tiny_models):
    from pytest_lsp import client_capabilities

    from conftest import Wire

    wire = Wire(client)
    early = hover_request("early", {"line": 0, "character": 0})
    wire.send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": "file:///wire/doc.txt", "languageId": "plaintext", "version": 1, "text": "early"}}})
    wire.send(early)
    await wire.until(["early"])
    assert wire.code("early") == -32002  # ServerNotInitialized
    await client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri="file:///tmp",
        initialization_options={"model": str(tiny_models["gpt2"]), "device": "cpu"}))
    wire.send(hover_request("after-initialize", {"line": 0, "character": 0}))
    await wire.until(["after-initialize"])
    assert "unknown document" in wire.answers["after-initialize"][0][1].message  # the early didOpen was dropped
    await client.shutdown_async(None)
    wire.send(hover_request("late", {"line": 0, "character": 0}))
    await wire.until(["late"])
    assert wire.code("late") == INVALID_REQUEST
    client.exit(None)
    assert await client._server.wait() == 0


async def test_a_lone_surrogate_is_read_as_u_fffd_by_every_feature(tiny_client, tiny_gpt2_engine):
    """Editors send lone UTF-16 surrogates (JSON can carry them); the tokenizer refuses them. The model
    reads U+FFFD in their place, one UTF-16 unit as they are, so positions stay where the client has them."""
    uri = "file:///wire/surrogate.txt"
    text = "ab\ud800cd ef\nx\udc00y"
    open_document(tiny_client, uri, text)
    doc = types.TextDocumentIdentifier(uri=uri)
    seen = len(tiny_client.log_messages)
    completion = await tiny_client.text_document_completion_async(types.CompletionParams(
        text_document=doc, position=types.Position(line=0, character=5)))
    expected = [c.id for c in tiny_gpt2_engine.next_tokens("ab\ufffdcd", 60).choices
                if not c.token.special and not c.token.partial][:10]
    assert [i.data["id"] for i in completion.items] == expected
    hover = await tiny_client.text_document_hover_async(types.HoverParams(
        text_document=doc, position=types.Position(line=0, character=7)))
    assert hover is not None
    tokens = await tiny_client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(text_document=doc))
    line, start, spans = 0, 0, []
    for i in range(0, len(tokens.data), 5):
        delta_line, delta_start, length = tokens.data[i:i + 3]
        line += delta_line
        start = start + delta_start if delta_line == 0 else delta_start
        spans.append(text.split("\n")[line][start:start + length])  # one UTF-16 unit per character here
    # every scored token, where the client has it: the surrogates' spans cover them, and nothing shifts after
    assert "".join(spans).endswith("\ud800cdefx\udc00y"), spans
    report = await tiny_client.text_document_diagnostic_async(types.DocumentDiagnosticParams(text_document=doc))
    assert report.kind == "full"
    problems = [m.message for m in tiny_client.log_messages[seen:] if m.type <= types.MessageType.Warning]
    assert not problems, problems
