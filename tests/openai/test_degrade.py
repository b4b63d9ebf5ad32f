"""A server that gives no log-probabilities of a text (it ignores `echo`, as llama-server's
/v1/completions does), of no kind logitls knows: found out on the first hover, said once as a fact
(not a failure, no error, no "answers again"), and every hover after says hover is unavailable
there; completion keeps working."""

from __future__ import annotations

import pytest
import pytest_asyncio
from lsprotocol import types

from backend_helpers import hover
from conftest import open_document, start_session
from vllm_standin import VLLMStandIn

TEXT = "The capital of France is Paris."


@pytest.fixture(scope="module")
def plain_server(default_engine):
    server = VLLMStandIn(default_engine, owned_by="someone", echo=False).start()
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(plain_server):
    session = await start_session({"backend": "openai", "endpoint": plain_server.url})
    yield session
    await session.shutdown_session()


async def test_hover_says_unavailable_once_learnt_and_completion_works(client, plain_server):
    uri = "file:///plain/paris.txt"
    open_document(client, uri, TEXT)
    for _ in range(3):
        value = (await hover(client, uri, 6)).contents.value
        assert value.startswith("**logitls**: unavailable: the openai-compatible server at ")
        assert "gives no probabilities of a text's tokens" in value
    completion = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=24)))
    assert completion.items[0].label == "␣Paris"
    echoes = [b for p, b in plain_server.requests if p == "/v1/completions" and b.get("echo")]
    assert len(echoes) == 1  # asked once: the answer is a fact about the server
    warnings = [m.message for m in client.messages if m.type == types.MessageType.Warning]
    assert len(warnings) == 1 and "does not return log-probabilities" in warnings[0]
    assert not [m for m in client.messages if m.type == types.MessageType.Error or "answers again" in m.message]
