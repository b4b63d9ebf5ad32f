"""The wire under fire, end to end over stdio: edits with every kind of line break and astral
characters, interleaved with good requests and with malformed JSON-RPC of every kind. The server
never dies, every request id gets exactly one answer, and after every edit the server holds the
text the client holds (the reference TextDocument, conftest.py).

Seeded (LOGITLS_FUZZ_SEED picks another run) and bounded: 200 messages, against the tiny model.
Nothing waits on the clock: each edit is checked with a request the server answers after it.
"""

from __future__ import annotations

import json
import os
import random

from lsprotocol import types

from conftest import ReferenceDocument, Wire, open_document, server_text_is

SEED = int(os.environ.get("LOGITLS_FUZZ_SEED", "11"))
MESSAGES = 200
URI, OTHER = "file:///fuzz/doc.txt", "file:///fuzz/other.txt"
ODD_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
PIECES = list("ab xy\t\n\r") + ["\r\n", "é", "中", "😀", "𝔸", "e\u0301", "\x00", " the", " cat"] + list(ODD_BREAKS)
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
CONTENT_MODIFIED, REQUEST_CANCELLED = -32801, -32800
ANY = "any"  # exactly one answer, whatever it says
OK = "ok"  # a result (or: the document changed meanwhile, or it was cancelled)


def random_text(rng: random.Random, most: int = 8) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(0, most)))


def random_position(rng: random.Random, reference: ReferenceDocument, wild: bool = True) -> dict:
    boundaries = reference.boundaries()
    line, character = reference.position_at(rng.choice(boundaries))
    if wild and rng.random() < 0.25:  # past a line's end, or the document's: clamped
        line += rng.randint(0, 2)
        character += rng.randint(0, 3)
        if reference.offset_at(line, character) not in boundaries:
            character = 0  # never cut an astral character in two: a Python str cannot hold the halves
    return {"line": line, "character": character}


def edit_params(rng: random.Random, reference: ReferenceDocument, version: int) -> dict:
    changes = []
    for _ in range(rng.randint(1, 3)):
        new = "" if len(reference.units) > 160 else random_text(rng)
        if rng.random() < 0.05:
            reference.units = reference._units(new)
            changes.append({"text": new})
            continue
        start, end = random_position(rng, reference), random_position(rng, reference)
        reference.apply((start["line"], start["character"]), (end["line"], end["character"]), new)
        changes.append({"range": {"start": start, "end": end}, "text": new})
    return {"textDocument": {"uri": URI, "version": version}, "contentChanges": changes}


def good_request(rng: random.Random, reference: ReferenceDocument) -> tuple[str, dict]:
    doc = {"uri": URI}
    position = random_position(rng, reference, wild=False)
    whole = {"start": {"line": 0, "character": 0}, "end": random_position(rng, reference, wild=False)}
    return rng.choice([
        ("textDocument/hover", {"textDocument": doc, "position": position}),
        ("textDocument/completion", {"textDocument": doc, "position": position}),
        ("textDocument/inlineCompletion", {"textDocument": doc, "position": position,
                                           "context": {"triggerKind": 2}}),
        ("textDocument/semanticTokens/full", {"textDocument": doc}),
        ("textDocument/semanticTokens/range", {"textDocument": doc, "range": whole}),
        ("textDocument/codeLens", {"textDocument": doc}),
        ("textDocument/diagnostic", {"textDocument": doc}),
        ("workspace/executeCommand", {"command": "logitls.documentStats", "arguments": [{"textDocument": doc}]}),
    ])


WRONG_VALUES = [None, -1, 2 ** 40, 1.5, True, "x", "\ud800", [], {}, [1, {"a": None}]]


def mutate_leaf(rng: random.Random, params):
    """Replace or delete one value anywhere in params."""
    paths = []

    def walk(node, path):
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + (key,))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, path + (index,))

    walk(params, ())
    path = rng.choice(paths[1:] or paths)
    if not path:
        return rng.choice(WRONG_VALUES)
    parent = params
    for step in path[:-1]:
        parent = parent[step]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
    else:
        parent[path[-1]] = rng.choice([v for v in WRONG_VALUES if type(v) is not type(parent[path[-1]])])
    return params


def body(message: dict) -> bytes:
    return json.dumps(message).encode()


class Fuzz:
    def __init__(self, rng: random.Random, wire: Wire, reference: ReferenceDocument) -> None:
        self.rng, self.wire, self.reference = rng, wire, reference
        self.expected: dict = {}  # id -> OK, ANY or the error code of its one answer
        self.nulls = 0  # answers with "id": null to expect
        self.count = 0

    def new_id(self):
        self.count += 1
        return self.rng.choice([f"fuzz-{self.count}", 10_000 + self.count, -self.count, 2 ** 70 + self.count])

    def request(self, method: str, params, expect, **envelope) -> None:
        msg_id = self.new_id()
        self.expected[msg_id] = expect
        self.wire.send(body({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params, **envelope}))

    def good(self) -> None:
        self.request(*good_request(self.rng, self.reference), OK)

    def bad_request(self) -> None:
        rng = self.rng
        method, params = good_request(rng, self.reference)
        kind = rng.randrange(13)
        if kind == 0:
            self.request(method, None, INVALID_PARAMS)
        elif kind == 1:
            self.request(method, rng.choice([7, "text", True]), INVALID_PARAMS)
        elif kind == 2:
            self.request(method, mutate_leaf(rng, params), ANY)
        elif kind == 3:
            position = {"line": rng.choice([0, -3, 2 ** 31, 2 ** 40]), "character": rng.choice([-1, 2 ** 31, 2 ** 53])}
            self.request("textDocument/hover", {"textDocument": {"uri": URI}, "position": position}, INVALID_PARAMS)
        elif kind == 4:
            self.request(rng.choice(["logitls/nothing", "textDocument/definition", ""]), params, METHOD_NOT_FOUND)
        elif kind == 5:
            self.request(method, params, INVALID_REQUEST, jsonrpc=rng.choice(["1.0", 2, None]))
        elif kind == 6:
            msg_id = self.new_id()
            self.expected[msg_id] = INVALID_REQUEST
            self.wire.send(body({"jsonrpc": "2.0", "id": msg_id, "params": params}))  # no method
        elif kind == 7:
            self.request(rng.choice([5, None, ["textDocument/hover"]]), params, INVALID_REQUEST)
        elif kind == 8:  # a notification's method, with an id: not run (the edit would be lost to the client)
            self.request("textDocument/didChange", edit_params(rng, ReferenceDocument(self.reference.text), 0),
                         METHOD_NOT_FOUND)
        elif kind == 9:  # bytes that are not UTF-8 inside a string: answered, as unparseable
            msg_id = self.new_id()
            self.expected[msg_id] = PARSE_ERROR
            raw = body({"jsonrpc": "2.0", "id": msg_id, "method": "textDocument/hover",
                        "params": {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}}})
            self.wire.send(raw.replace(b"fuzz/doc", b"fuzz/\xff\xc3(doc"))
        elif kind == 10:  # an id that cannot be echoed
            self.nulls += 1
            self.wire.send(body({"jsonrpc": "2.0", "id": rng.choice([1.5, True, None, {"a": 1}, [1]]),
                                 "method": method, "params": params}))
        elif kind == 11:  # not JSON at all, or cut short
            self.nulls += 1
            raw = body({"jsonrpc": "2.0", "id": self.new_id(), "method": method, "params": params})
            self.wire.send(rng.choice([raw[:rng.randrange(1, len(raw))], b"\xff\xfe\xfd", b"{]", b" "]))
        else:  # valid JSON, not an object
            self.nulls += 1
            self.wire.send(rng.choice([b"[]", b"[1, 2]", b"42", b'"hover"', b"null"]))

    def bad_notification(self) -> None:
        """Notifications that do not fit: dropped, no answer, the document unchanged."""
        rng = self.rng
        edit = {"textDocument": {"uri": URI, "version": 999}, "contentChanges": [
            {"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}}, "text": "LOST"}]}
        kind = rng.randrange(9)
        if kind == 0:
            params = rng.choice([None, 5, "x", []])
        elif kind == 1:
            edit["contentChanges"][0]["range"]["start"]["character"] = rng.choice([-1, 2 ** 31, "0", 1.5])
            params = edit
        elif kind == 2:
            edit["contentChanges"][0]["text"] = rng.choice([5, None, ["LOST"], {"text": "LOST"}])
            params = edit
        elif kind == 3:
            edit["textDocument"]["version"] = rng.choice(["2", None, 1.5])
            params = edit
        elif kind == 4:
            edit["contentChanges"] = rng.choice([{"text": "LOST"}, "LOST", None])
            params = edit
        elif kind == 5:  # not UTF-8
            raw = body({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": edit})
            self.wire.send(raw.replace(b"LOST", b"LO\xffST"))
            return
        elif kind == 6:  # not JSON-RPC 2.0: answered with "id": null, as the spec has it
            self.nulls += 1
            self.wire.send(body({"jsonrpc": "1.0", "method": "textDocument/didChange", "params": edit}))
            return
        elif kind == 7:  # other notifications, mutated anywhere: whatever they do, they touch no open text
            method, params = rng.choice([
                ("textDocument/didOpen", {"textDocument": {"uri": OTHER, "languageId": "plaintext", "version": 1,
                                                           "text": random_text(rng)}}),
                ("textDocument/didClose", {"textDocument": {"uri": OTHER}}),
                ("$/cancelRequest", {"id": rng.choice(list(self.expected) or [1])}),
                ("$/setTrace", {"value": "off"}),
                ("window/workDoneProgress/cancel", {"token": "nope"}),
                ("logitls/unknown", {"a": [1]}),
            ])
            params = mutate_leaf(rng, params) if rng.random() < 0.7 else params
            self.wire.send(body({"jsonrpc": "2.0", "method": method, "params": params}))
            return
        else:  # a request's method without an id
            method, params = good_request(rng, self.reference)
        self.wire.send(body({"jsonrpc": "2.0", "method": "textDocument/didChange" if kind < 5 else method,
                             "params": params}))

    def cancel(self) -> None:
        if self.expected:
            msg_id = self.rng.choice(list(self.expected))
            if self.expected[msg_id] == OK:
                self.expected[msg_id] = ANY  # a result, or RequestCancelled: one answer either way
            self.wire.send(body({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": msg_id}}))


def check(msg_id, expected, answers) -> str | None:
    if len(answers) != 1:
        return f"{msg_id!r}: {len(answers)} answers"
    _, error = answers[0]
    code = None if error is None else error.code
    if expected == ANY or (expected == OK and code in (None, CONTENT_MODIFIED, REQUEST_CANCELLED)):
        return None
    if expected != OK and code == expected:
        return None
    return f"{msg_id!r}: expected {expected}, got {code} {getattr(error, 'message', '')}"


async def test_edits_after_odd_line_breaks_land_where_the_client_put_them(tiny_client, tiny_gpt2_engine):
    text = "one\x0ctwo\nthree\u2028four\rfive\r\nsix\x85seven"
    uri = "file:///fuzz/odd.txt"
    open_document(tiny_client, uri, text)
    reference = ReferenceDocument(text)
    for version, (start, end, new) in enumerate([((1, 0), (1, 0), "X"), ((2, 1), (2, 2), "Y"), ((3, 4), (3, 4), "Z"),
                                                 ((0, 9), (1, 1), " joined "), ((1, 99), (2, 0), "")], start=2):
        reference.apply(start, end, new)
        tiny_client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=types.Position(line=start[0], character=start[1]),
                                  end=types.Position(line=end[0], character=end[1])), text=new)]))
        await server_text_is(tiny_client, uri, reference.text, tiny_gpt2_engine)
    assert reference.text == "one\x0ctwo joined three\u2028four\rfYvesix\x85Zseven"


async def test_random_messages_edits_and_requests(tiny_client, tiny_gpt2_engine):
    rng = random.Random(SEED)
    wire = Wire(tiny_client)
    text = random_text(rng, 20)
    reference = ReferenceDocument(text)
    open_document(tiny_client, URI, text)
    fuzz = Fuzz(rng, wire, reference)
    version = 1
    for _ in range(MESSAGES):
        roll = rng.random()
        if roll < 0.25:
            version += 1
            wire.send(body({"jsonrpc": "2.0", "method": "textDocument/didChange",
                            "params": edit_params(rng, reference, version)}))
            await server_text_is(tiny_client, URI, reference.text, tiny_gpt2_engine)
        elif roll < 0.45:
            fuzz.good()
        elif roll < 0.75:
            fuzz.bad_request()
        elif roll < 0.95:
            fuzz.bad_notification()
        else:
            fuzz.cancel()
    await wire.until(list(fuzz.expected), nulls=fuzz.nulls, timeout=600)
    await wire.round_trip()
    problems = [p for msg_id, expected in fuzz.expected.items() if (p := check(msg_id, expected, wire.answers[msg_id]))]
    assert not problems, problems
    assert len(wire.null_answers) == fuzz.nulls
    assert tiny_client._server.returncode is None
    await server_text_is(tiny_client, URI, reference.text, tiny_gpt2_engine)
    print(f"seed {SEED}: {len(fuzz.expected)} requests, each answered once; {fuzz.nulls} answered with id null; "
          f"{version - 1} edits; text {reference.text!r}")
