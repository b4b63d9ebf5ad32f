"""The surprisal lens end to end: semantic tokens, surprise diagnostics, code lens, documentStats."""

from __future__ import annotations

import asyncio
import math
import re

import pytest
import torch
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from conftest import (hold_model_thread, open_document, release_model_thread, start_session, wait_until_held,
                      reference_model, wait_until_queued)

BUCKETS = ["likely", "plausible", "unlikely", "surprising"]


def doc(uri):
    return types.TextDocumentIdentifier(uri=uri)


def rank_range(row, token_id: int, tolerance: float = 1e-4) -> range:
    """The ranks a token can have when log-probabilities are known to `tolerance` (fp32 kernels differ a
    little between processes; deep in the tail, many tokens lie within 1e-6 of each other)."""
    target = row[token_id].item()
    return range(int((row > target + tolerance).sum()) + 1, int((row > target - tolerance).sum()) + 2)


def decode(data, text: str):
    """Semantic tokens back to (text covered, bucket name) pairs (ASCII text: UTF-16 = str index)."""
    lines = text.split("\n")
    out, line, start = [], 0, 0
    for i in range(0, len(data), 5):
        delta_line, delta_start, length, kind, _ = data[i:i + 5]
        line += delta_line
        start = start + delta_start if delta_line == 0 else delta_start
        out.append((lines[line][start:start + length], BUCKETS[kind]))
    return out


async def test_legend_and_tokens_cover_the_documents_tokens(tiny_client, tiny_gpt2_engine):
    text = "The quick brown fox\njumps over the lazy dog."
    uri = "file:///lens/fox.txt"
    open_document(tiny_client, uri, text)
    legend = tiny_client.initialize_result.capabilities.semantic_tokens_provider.legend
    assert list(legend.token_types)[:4] == BUCKETS  # then the entropy view's types (test_score.py)
    result = await tiny_client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(text_document=doc(uri)))
    covered = decode(result.data, text)
    scores = tiny_gpt2_engine.document_scores(text)
    expected = [s.token.text.strip() for s in scores.tokens[1:] if s.token.text.strip()]
    assert [word for word, _ in covered] == expected  # every scored token, whitespace trimmed, in order
    edges = (10, 100, 1000)
    for (word, bucket), score in zip(covered, [s for s in scores.tokens[1:] if s.token.text.strip()]):
        assert bucket == BUCKETS[sum(score.rank > e for e in edges)]


async def test_range_request_and_delta(tiny_client):
    text = "one two three\nfour five six\nseven eight nine"
    uri = "file:///lens/range.txt"
    open_document(tiny_client, uri, text)
    full = await tiny_client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(text_document=doc(uri)))
    second_line = await tiny_client.text_document_semantic_tokens_range_async(types.SemanticTokensRangeParams(
        text_document=doc(uri), range=types.Range(start=types.Position(line=1, character=0),
                                                  end=types.Position(line=1, character=13))))
    words = [w for w, _ in decode(second_line.data, "\n" * 1 + text.split("\n")[1])]
    assert words == ["four", "five", "six"]
    assert len(second_line.data) < len(full.data)
    # an edit at the end: the delta keeps the unchanged start
    tiny_client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=2, character=16), end=types.Position(line=2, character=16)),
            text=" ten")]))
    delta = await tiny_client.text_document_semantic_tokens_full_delta_async(types.SemanticTokensDeltaParams(
        text_document=doc(uri), previous_result_id=full.result_id))
    assert isinstance(delta, types.SemanticTokensDelta)
    [edit] = delta.edits
    rebuilt = list(full.data[:edit.start]) + list(edit.data or []) + list(full.data[edit.start + edit.delete_count:])
    again = await tiny_client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(text_document=doc(uri)))
    assert rebuilt == list(again.data)
    assert edit.start > 0


async def test_paris_is_likely_and_zebra_is_surprising(default_client):
    uri = "file:///lens/paris.txt"
    text = "The capital of France is Paris\nThe capital of France is zebra"
    open_document(default_client, uri, text)
    result = await default_client.text_document_semantic_tokens_full_async(
        types.SemanticTokensParams(text_document=doc(uri)))
    pairs = decode(result.data, text)
    assert ("Paris", "likely") in pairs  # in the top 10
    [zebra] = [bucket for word, bucket in pairs if word == "zebra"]
    assert zebra in ("unlikely", "surprising")  # outside the top 100


async def test_surprise_diagnostic_with_a_lowered_threshold(default_client, default_engine):
    uri = "file:///lens/diagnostics.txt"
    text = "The capital of France is zebra"
    default_client.set_configuration({"logitls": {"lens": {"diagnosticMinBits": 12, "diagnosticSeverity": "information"}}})
    default_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
    await asyncio.sleep(0.2)
    open_document(default_client, uri, text)
    report = await default_client.text_document_diagnostic_async(types.DocumentDiagnosticParams(text_document=doc(uri)))
    zebra = [d for d in report.items if text[d.range.start.character:d.range.end.character] == "zebra"]
    assert len(zebra) == 1
    score = next(s for s in default_engine.document_scores(text).tokens if s.token.text == " zebra")
    assert zebra[0].severity == types.DiagnosticSeverity.Information
    assert zebra[0].message.startswith(f"unlikely here: p={score.prob:.2g} (rank ")
    assert abs(zebra[0].data["rank"] - score.rank) <= 2 and zebra[0].data["prob"] == pytest.approx(score.prob, rel=1e-3)
    assert "the model expected ' Paris' (77.3%)" in zebra[0].message
    default_client.set_configuration({"logitls": {}})


async def test_code_lens_and_document_stats_give_the_engines_perplexity(default_client, default_engine):
    uri = "file:///lens/stats.txt"
    text = "The capital of France is Paris. It is a large city on the Seine."
    open_document(default_client, uri, text)
    lenses = await default_client.text_document_code_lens_async(types.CodeLensParams(text_document=doc(uri)))
    stats = await default_client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="logitls.documentStats", arguments=[{"textDocument": {"uri": uri}}]))
    ids = default_engine.tokenizer(text)["input_ids"]
    with torch.inference_mode():
        logprobs = torch.log_softmax(reference_model(default_engine)(torch.tensor([ids])).logits[0].float(), -1)
    nll = -sum(logprobs[i - 1, ids[i]].item() for i in range(1, len(ids))) / (len(ids) - 1)
    assert stats["perplexity"] == pytest.approx(math.exp(nll), rel=1e-4)
    assert stats["tokens"] == len(ids) and stats["scoredTokens"] == len(ids) - 1
    assert stats["meanSurprisalBits"] == pytest.approx(nll / math.log(2), rel=1e-4)
    [lens] = lenses
    assert lens.range.start.line == 0
    assert f"perplexity {stats['perplexity']:.2f}" in lens.command.title
    assert lens.command.command == "logitls.documentStats"


async def test_numbers_agree_across_features_and_a_full_forward_pass(default_client, default_engine):
    """Semantic tokens, diagnostics and hover report one computation, equal to a plain forward pass."""
    uri = "file:///lens/agree.txt"
    text = "The capital of France is zebra"
    open_document(default_client, uri, text)
    ids = default_engine.tokenizer(text)["input_ids"]
    with torch.inference_mode():
        logprobs = torch.log_softmax(reference_model(default_engine)(torch.tensor([ids])).logits[0].float(), -1)
    row = logprobs[len(ids) - 2]
    ranks = rank_range(row, ids[-1])
    prob = math.exp(row[ids[-1]].item())
    hover = await default_client.text_document_hover_async(types.HoverParams(
        text_document=doc(uri), position=types.Position(line=0, character=27)))
    shown = re.search(r"p = ([\d.e+-]+) .*, rank (\d+) of", hover.contents.value)
    assert float(shown.group(1)) == pytest.approx(prob, rel=1e-3) and int(shown.group(2)) in ranks
    default_client.set_configuration({"logitls": {"lens": {"diagnosticMinBits": 1}}})
    default_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
    await asyncio.sleep(0.2)
    report = await default_client.text_document_diagnostic_async(types.DocumentDiagnosticParams(text_document=doc(uri)))
    [zebra] = [d for d in report.items if d.range.start.character == 25]
    assert zebra.data["rank"] in ranks and zebra.data["prob"] == pytest.approx(prob, rel=1e-4)
    default_client.set_configuration({"logitls": {}})
    tokens = await default_client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(text_document=doc(uri)))
    assert decode(tokens.data, text)[-1] == ("zebra", BUCKETS[sum(ranks[0] > e for e in (10, 100, 1000))])


async def test_bad_input_to_the_lens(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"]), "lens": {"maxDocumentTokens": 50}})
    try:
        with pytest.raises(JsonRpcInvalidParams, match="unknown document"):
            await client.text_document_semantic_tokens_full_async(
                types.SemanticTokensParams(text_document=doc("file:///lens/nowhere.txt")))
        with pytest.raises(JsonRpcInvalidParams, match="expected one argument"):
            await client.workspace_execute_command_async(types.ExecuteCommandParams(
                command="logitls.documentStats", arguments=[42]))
        huge = "word " * 400
        open_document(client, "file:///lens/huge.txt", huge)
        result = await client.text_document_semantic_tokens_full_async(
            types.SemanticTokensParams(text_document=doc("file:///lens/huge.txt")))
        assert list(result.data) == []  # too long: an empty lens, said in the log
        assert any("maxDocumentTokens" in m.message for m in client.log_messages)
        with pytest.raises(JsonRpcInvalidParams, match="cannot score this document: 401 tokens, more than lens.maxDocumentTokens"):
            await client.workspace_execute_command_async(types.ExecuteCommandParams(
                command="logitls.documentStats", arguments=[{"textDocument": {"uri": "file:///lens/huge.txt"}}]))
        # and it keeps serving
        open_document(client, "file:///lens/ok.txt", "hello world")
        ok = await client.text_document_completion_async(types.CompletionParams(
            text_document=doc("file:///lens/ok.txt"), position=types.Position(line=0, character=11)))
        assert len(ok.items) == 10
    finally:
        await client.shutdown_session()


async def test_a_completion_does_not_wait_for_a_lens_pass(default_client):
    """A long background pass yields to a keystroke: the completion answers while the pass is under way."""
    uri = "file:///lens/long.py"
    text = "\n".join(f"def function_{i}(value):\n    return value * {i} + sum(range({i}))" for i in range(100))
    default_client.set_configuration({"logitls": {"logLevel": "debug", "lens": {"debounceMs": 0}}})
    default_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
    await asyncio.sleep(0.2)
    # Armed before the open: the pass the open starts (pushed diagnostics) is the one held.
    mark = hold_model_thread(default_client, at_check=2, key_contains=f"{uri}', 'lens")
    open_document(default_client, uri, text, language="python")
    lens_task = asyncio.ensure_future(default_client.text_document_semantic_tokens_full_async(
        types.SemanticTokensParams(text_document=doc(uri))))
    await wait_until_held(default_client, mark)  # the pass has scored its first chunks
    completion = asyncio.ensure_future(default_client.text_document_completion_async(types.CompletionParams(
        text_document=doc(uri), position=types.Position(line=0, character=4))))
    await wait_until_queued(default_client)
    release_model_thread(default_client)
    completion = await completion
    assert completion.items
    assert not lens_task.done()  # the completion was answered mid-pass
    tokens = await asyncio.wait_for(lens_task, 600)
    assert len(tokens.data) > 1000
    assert any("stopped before it finished" in m.message and "lens" in m.message for m in default_client.log_messages)
    default_client.set_configuration({"logitls": {}})


async def test_diagnostics_are_pushed_to_a_client_that_cannot_pull(tiny_models):
    capabilities = types.ClientCapabilities(text_document=types.TextDocumentClientCapabilities(
        publish_diagnostics=types.PublishDiagnosticsClientCapabilities()))
    client = await start_session({"model": str(tiny_models["gpt2"]), "lens": {"diagnosticMinBits": 0,
                                                                          "debounceMs": 0}},
                                 capabilities=capabilities)
    try:
        uri = "file:///lens/pushed.txt"
        open_document(client, uri, "The quick brown fox")
        for _ in range(200):
            if client.diagnostics.get(uri):
                break
            await asyncio.sleep(0.05)
        pushed = client.diagnostics[uri]
        assert pushed and all(d.source == "logitls" and d.message.startswith("unlikely here") for d in pushed)
        assert len(pushed) == 3  # every token but the first, with the threshold at 0 bits
    finally:
        await client.shutdown_session()
