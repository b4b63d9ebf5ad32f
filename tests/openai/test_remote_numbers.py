"""Numbers from an OpenAI-compatible server are checked where they enter (the backend): a
log-probability is a finite number <= 0, or -Infinity, shown as p = 0; anything else (NaN, 1000,
+Infinity) is left out and said once; a list sent as a map is a malformed answer, said once. No
request fails with a traceback, and nothing the editor gets carries a number JSON cannot write."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import pytest_asyncio
from lsprotocol import types

from conftest import open_document, start_session
from scripted_server import ScriptedServer


@pytest.fixture(scope="module")
def scripted():
    server = ScriptedServer().start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(scripted):
    client = await start_session({"backend": "openai", "endpoint": scripted.url,
                                  "lens": {"debounceMs": 0, "diagnosticMinBits": 1}})
    yield client
    await client.shutdown_session()


def said(client, words: str) -> list[str]:
    return [m.message for m in client.messages if words in m.message]


async def until_said(client, words: str, timeout: float = 60) -> list[str]:
    for _ in range(int(timeout / 0.05)):
        if said(client, words):
            break
        await asyncio.sleep(0.05)
    return said(client, words)


def position(character: int) -> types.Position:
    return types.Position(line=0, character=character)


async def test_completion_with_numbers_that_are_not_log_probabilities(client, scripted):
    uri = "file:///remote/paris.txt"
    open_document(client, uri, "The capital of France is")
    doc = types.TextDocumentIdentifier(uri=uri)
    scripted.top = {" Paris": -0.26, " the": -math.inf, " x": 1000.0, " y": math.nan, " z": math.inf}
    result = await client.text_document_completion_async(types.CompletionParams(text_document=doc,
                                                                                position=position(24)))
    items = {item.label: item for item in result.items}
    assert set(items) == {"␣Paris", "␣the"}
    assert items["␣the"].data["prob"] == 0.0 and math.isfinite(items["␣the"].data["logprob"])
    json.dumps([item.data for item in result.items], allow_nan=False)
    [told] = await until_said(client, "log-probability that is not one")
    # the same again: said once
    await client.text_document_completion_async(types.CompletionParams(text_document=doc, position=position(24)))
    assert len(said(client, "log-probability that is not one")) == 1

    # top_logprobs as a map, not a list of maps: a malformed answer, said once; empty, not an error
    scripted.top, scripted.top_as_is = {" Paris": -0.26}, True
    for _ in range(2):
        result = await client.text_document_completion_async(types.CompletionParams(text_document=doc,
                                                                                    position=position(24)))
        assert result is None or not result.items
    [told] = await until_said(client, "sent top_logprobs as dict")
    assert "Traceback" not in told
    scripted.top, scripted.top_as_is = {" Paris": -0.26}, False
    result = await client.text_document_completion_async(types.CompletionParams(text_document=doc,
                                                                                position=position(24)))
    assert [item.label for item in result.items] == ["␣Paris"]


async def test_scores_that_are_nan_or_minus_infinity(client, scripted):
    text = "alpha beta gamma delta"
    doc = types.TextDocumentIdentifier(uri="file:///remote/nan.txt")
    scripted.own = math.nan
    open_document(client, doc.uri, text)
    hover = await client.text_document_hover_async(types.HoverParams(text_document=doc, position=position(8)))
    assert hover is None or "nan" not in hover.contents.value.lower()
    lenses = await client.text_document_code_lens_async(types.CodeLensParams(text_document=doc))
    assert not any("nan" in lens.command.title for lens in lenses or [])

    scripted.own = -math.inf  # p = 0: the least likely a token can be
    doc = types.TextDocumentIdentifier(uri="file:///remote/zero.txt")
    open_document(client, doc.uri, text.replace("alpha", "omega"))  # another text: the server's answer is new
    hover = await client.text_document_hover_async(types.HoverParams(text_document=doc, position=position(8)))
    assert "p = 0 " in hover.contents.value and "nan" not in hover.contents.value.lower()
    report = await client.text_document_diagnostic_async(types.DocumentDiagnosticParams(text_document=doc))
    assert len(report.items) == 3 and all("p=0 " in d.message for d in report.items)
    lenses = await client.text_document_code_lens_async(types.CodeLensParams(text_document=doc))
    assert lenses and "perplexity" in lenses[0].command.title and "inf" not in lenses[0].command.title
    assert not said(client, "could not")
