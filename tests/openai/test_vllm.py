"""backend "openai" against vLLM's shapes (the stand-in in vllm_standin.py, driven by the default
model, so every number is real): exact ranks from `prompt_logprobs`, including tokens far below
the top K; the 400 on too many logprobs and the clamp to the stated limit; long documents scored
in windows; and the surprisal lens end to end, one scoring request per document version."""

from __future__ import annotations

import re

import httpx
import pytest
import pytest_asyncio
from lsprotocol import types

from backend_helpers import connect
from conftest import open_document, start_session
from vllm_standin import VLLMStandIn

TEXT = ("The capital of France is Paris. The capital of Italy is Rome, and the capital of "
        "Germany is Berlin. Zebras quietly photosynthesize in December.")


@pytest.fixture(scope="module")
def standin(default_engine):
    server = VLLMStandIn(default_engine).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote(standin):
    backend = connect(standin.url)
    yield backend
    backend.close()


def by_span(scores):
    return {(s.start, s.end): s for s in scores.tokens}


def test_the_standin_refuses_too_many_logprobs_as_vllm_does(standin):
    answer = httpx.post(standin.url + "/completions", json={
        "model": standin.name, "prompt": "Hello", "echo": True, "max_tokens": 0, "prompt_logprobs": 21}, timeout=60)
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith(
        "Requested prompt logprobs of 21, which is greater than max allowed: 20")


def test_detected_as_vllm_with_exact_capabilities(remote, standin):
    assert remote.server_kind == "vllm" and remote.loaded.server_kind == "vllm"
    assert remote.capabilities.ranks == "exact" and remote.capabilities.document_scores
    assert remote.context_window == standin.max_model_len


def test_exact_ranks_including_tokens_outside_the_top_k(remote, default_engine):
    theirs, ours = by_span(remote.token_scores(TEXT)), by_span(default_engine.token_scores(TEXT))
    assert theirs.keys() == ours.keys()
    far = 0
    for span, local in ours.items():
        score = theirs[span]
        assert score.token.text == local.token.text
        if local.prob is None:
            assert score.prob is None
            continue
        assert score.rank == local.rank, (score.token.text, score.rank, local.rank)
        assert score.logprob == pytest.approx(local.logprob, abs=1e-3)
        assert [a.text for a in score.alternatives[:3]] == [a.text for a in local.alternatives[:3]]
        far += local.rank > len(score.alternatives)
    assert far >= 2, "the text must hold tokens below the server's top K for this test to mean anything"


def test_hover_asks_for_the_text_up_to_the_line_and_gets_the_exact_rank(standin, remote, default_engine):
    text = TEXT + "\nA second line the hover never needs."
    offset = text.index("photosynthesize") + 2
    before = len(standin.scoring_requests())
    score = remote.token_score_at(text, offset, document="hover")
    sent = standin.scoring_requests()[before:]
    assert len(sent) == 1 and "second line" not in str(sent[0]["prompt"])
    local = next(s for s in default_engine.token_scores(text).tokens if s.start <= offset < s.end)
    assert (score.token.text, score.rank) == (local.token.text, local.rank) and score.rank > 10


def test_too_many_logprobs_is_clamped_to_the_stated_limit_and_said_once(default_engine):
    server = VLLMStandIn(default_engine, max_logprobs=5).start()
    messages: list = []
    backend = connect(server.url, messages, alternatives=10)
    try:
        scores = backend.token_scores(TEXT)
        assert scores.tokens and all(len(s.alternatives) <= 5 for s in scores.tokens)
        assert [r["prompt_logprobs"] for r in server.scoring_requests()] == [10, 5]
        backend.token_scores(TEXT + " More.")
        assert server.scoring_requests()[-1]["prompt_logprobs"] == 5  # the cap is kept
        ours = by_span(default_engine.token_scores(TEXT))
        assert all(s.rank == ours[(s.start, s.end)].rank for s in scores.tokens if s.prob is not None)
        assert [level for level, m in messages] == ["info"] and "at most 5" in messages[0][1]
        assert backend.down is None
    finally:
        backend.close()
        server.stop()


def test_a_long_document_is_scored_in_windows(default_engine):
    window = 40
    server = VLLMStandIn(default_engine, max_model_len=window).start()
    backend = connect(server.url)
    text = "".join(f"Line {i}: the value of item {i} is {i * i}.\n" for i in range(12))
    try:
        ids = server.tokenize({"prompt": text})["tokens"]
        assert len(ids) > 3 * window
        scores = backend.document_scores(text, document="long")
        assert scores.truncated
        assert "".join(text[s.start:s.end] for s in scores.tokens) == text
        assert [s.index for s in scores.tokens] == list(range(len(ids)))
        assert scores.tokens[0].prob is None and all(s.prob is not None for s in scores.tokens[1:])
        sent = server.scoring_requests()
        assert all(isinstance(r["prompt"], list) and len(r["prompt"]) < window for r in sent)
        # Tokens of the first window saw the whole text before them: the local model's numbers.
        local = default_engine.token_scores(text).tokens
        first = len(sent[0]["prompt"])
        for mine, theirs in zip(scores.tokens[1:first], local[1:first]):
            assert (mine.rank, mine.logprob) == (theirs.rank, pytest.approx(theirs.logprob, abs=1e-3))
        # Every later token was scored inside a window, with at least half a window before it.
        spans = _windows(sent, ids)
        for score in scores.tokens[first:]:
            assert any(b <= score.index < e and score.index - b >= (window - 1) // 2 for b, e in spans), score.index
        # An edit at the end sends only the windows it changed; the same version sends nothing.
        assert backend.document_scores(text, document="long") is scores
        edited = text + "Line 12: done.\n"
        backend.document_scores(edited, document="long")
        again = server.scoring_requests()[len(sent):]
        assert 0 < len(again) < len(sent)
    finally:
        backend.close()
        server.stop()


def _windows(sent: list[dict], ids: list[int]) -> list[tuple[int, int]]:
    """Where in the document each window sent starts and ends (behind a BOS the server adds, if any)."""
    spans = []
    for request in sent:
        for skip in (0, 1):
            part = request["prompt"][skip:]
            begin = next((b for b in range(len(ids) - len(part) + 1) if ids[b:b + len(part)] == part), None)
            if begin is not None:
                spans.append((begin, begin + len(part)))
                break
    assert len(spans) == len(sent)
    return spans


# -- the language server end to end -------------------------------------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def vllm_client(standin):
    client = await start_session({"backend": "openai", "endpoint": standin.url, "lens": {"debounceMs": 0}})
    yield client
    await client.shutdown_session()


async def test_lsp_lens_on_vllm_one_request_per_version(vllm_client, standin, default_engine):
    uri = "file:///vllm/lens.txt"
    document = types.TextDocumentIdentifier(uri=uri)
    before = len(standin.scoring_requests())
    open_document(vllm_client, uri, TEXT)
    tokens = await vllm_client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(text_document=document))
    assert len(tokens.data) > 0
    lenses = await vllm_client.text_document_code_lens_async(types.CodeLensParams(text_document=document))
    assert lenses[0].command.title.startswith("logitls: perplexity ")
    assert f"scored remotely (vllm at {standin.url})" in lenses[0].command.title
    offset = TEXT.index("photosynthesize") + 2
    hover = await vllm_client.text_document_hover_async(types.HoverParams(
        text_document=document, position=types.Position(line=0, character=offset)))
    local = next(s for s in default_engine.token_scores(TEXT).tokens if s.start <= offset < s.end)
    value = hover.contents.value
    assert re.search(rf"rank {local.rank}\b", value) and "_exact: probability and rank over the whole vocabulary" in value
    assert len(standin.scoring_requests()) - before == 1  # tokens, code lens and hover shared one pass


async def test_lsp_completion_and_generate_work_on_vllm(vllm_client):
    uri = "file:///vllm/paris.txt"
    open_document(vllm_client, uri, "The capital of France is")
    result = await vllm_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=24)))
    assert result.items[0].label == "␣Paris"


def test_bench_measures_the_lens_pass_on_vllm(remote, default_engine):
    from logitls.bench.engine_bench import document_of
    from logitls.bench.openai_bench import remote_measurements

    results = remote_measurements(remote, document_of(default_engine, 120), document_of(default_engine, 30),
                                  "1, 2, 3, 4, 5, 6, 7, 8,", repeats=1, keys=1, new_tokens=4)
    assert results["ranks"] == "exact" and results["lens_pass_estimated"] is False
    assert results["lens_pass_ms"] > 0 and results["hover_one_token_ms"] > 0 and results["lens_ms_per_token"] > 0
