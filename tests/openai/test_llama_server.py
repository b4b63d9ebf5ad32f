"""backend "openai" against llama.cpp's own `llama-server` (built here by `make llama-server` from
llama-cpp-python 0.3.36's sdist, portable flags), serving the default GGUF: the dialect detected
once, completion and generate, hover through `/completion` (exact within the top K, a bound below),
and nothing said that the server did not give."""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio
from lsprotocol import types

from backend_helpers import connect, hover
from conftest import open_document, start_session
from llama_server import llama_cpp_server  # noqa: F401

PARIS = "The capital of France is"
TEXT = "The capital of France is Paris."


@pytest.fixture(scope="module")
def served(llama_cpp_server):
    backend = connect(llama_cpp_server.url)
    yield backend
    backend.close()


def test_its_completions_give_no_prompt_log_probabilities(llama_cpp_server):
    # The fact the dialect is built on. This build ignores `echo` (others refuse it with a 400): the
    # answer holds the generated token only.
    answer = httpx.post(llama_cpp_server.url + "/completions", json={
        "prompt": PARIS, "echo": True, "logprobs": 5, "max_tokens": 1, "temperature": 0}, timeout=60).json()
    choice = answer["choices"][0]
    assert choice["text"] == " Paris" and [e["token"] for e in choice["logprobs"]["content"]] == [" Paris"]


def test_detected_once_as_llama_server(served):
    assert served.server_kind == "llama.cpp" and served.vocab_size_known and served.vocab_size == 49152
    assert served.capabilities.ranks == "top-k" and not served.capabilities.document_scores


def test_next_tokens_and_greedy(served, default_engine):
    result = served.next_tokens(PARIS, 5)
    assert result.choices[0].text == " Paris"
    assert result.choices[0].logprob == pytest.approx(-0.264, abs=0.05)
    assert served.generate_text(PARIS, max_new_tokens=6).startswith(" Paris")


def test_hover_within_the_top_k_is_exact_and_below_it_a_bound(served, default_engine):
    local = {(s.start, s.end): s for s in default_engine.token_scores(TEXT).tokens}
    paris = served.token_score_at(TEXT, TEXT.index(" Paris") + 2, document="hover")
    assert (paris.start, paris.end) == (TEXT.index(" Paris"), TEXT.index(" Paris") + len(" Paris"))
    assert paris.rank == 1 and paris.alternatives[0].text == " Paris"
    assert paris.logprob == pytest.approx(local[(paris.start, paris.end)].logprob, abs=0.25)
    assert len(paris.alternatives) == 10
    capital = served.token_score_at(TEXT, 6, document="hover")
    mine = local[(capital.start, capital.end)]
    assert capital.token.text == mine.token.text == " capital"
    assert mine.rank > 10 + 5  # far below the top K locally: the server lists it neither
    assert capital.prob is None and capital.rank is None and len(capital.alternatives) == 10
    assert mine.prob < capital.alternatives[-1].prob * 1.5
    first = served.token_score_at(TEXT, 1, document="hover")
    assert first.index == 0 and first.prob is None and first.alternatives == []
    assert served.messages == [] and served.down is None


# -- the language server end to end -------------------------------------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(llama_cpp_server):
    session = await start_session({"backend": "openai", "endpoint": llama_cpp_server.url})
    yield session
    await session.shutdown_session()


async def test_lsp_completion_hover_and_lens_say_what_the_server_gives(client):
    uri = "file:///llama-server/paris.txt"
    open_document(client, uri, TEXT)
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=len(PARIS))))
    assert result.items[0].label == "␣Paris"
    value = (await hover(client, uri, TEXT.index(" Paris") + 2)).contents.value
    assert value.startswith("**`␣Paris`**: p = ") and "rank 1 of 49152," in value  # meta.n_vocab
    assert "_exact: within the top 10 the llama.cpp server listed_" in value
    below = (await hover(client, uri, 6)).contents.value
    # " capital" after "The" is far below the top 10 here (the backend test above checks it locally)
    assert below.startswith("**`␣capital`**: below the 10 alternatives the server listed: p < ")
    assert "rank > 10 of 49152" in below and "_bound: the llama.cpp server lists its top 10 only" in below
    first = (await hover(client, uri, 1)).contents.value
    # the first token has no probability: the hover says so and claims no exactness for numbers it lacks
    assert first == "**`The`**: the first token; nothing before it to condition on.", first
    tokens = await client.text_document_semantic_tokens_full_async(
        types.SemanticTokensParams(text_document=types.TextDocumentIdentifier(uri=uri)))
    assert list(tokens.data) == []
    assert any("needs the local backend or a vLLM server" in m.message for m in client.log_messages)
    assert [m for m in client.messages if m.type in (types.MessageType.Error, types.MessageType.Warning)] == []
