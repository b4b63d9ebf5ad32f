"""Scoring selections, entropy and decision points end to end, through `logitls serve`."""

from __future__ import annotations

import asyncio
import math
import re

import pytest
import torch
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from conftest import Wire, open_document, reference_model, start_session

TEXT = "The quick brown fox jumps over the lazy dog."


def doc(uri):
    return types.TextDocumentIdentifier(uri=uri)


def selection(uri, start, end, line=0):
    return {"textDocument": {"uri": uri},
            "range": {"start": {"line": line, "character": start}, "end": {"line": line, "character": end}}}


async def run(client, command, *arguments):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=command,
                                                                                   arguments=list(arguments)))


def expected_selection(engine, text, start, end):
    """Independently of the lens: token_scores, and the tokens whose text less its leading space lies
    inside [start, end) (the documented edge rule)."""
    inside = []
    for s in engine.token_scores(text).tokens:
        core_start = s.start + len(text[s.start:s.end]) - len(text[s.start:s.end].lstrip())
        if start <= core_start and s.end <= end and s.logprob is not None:
            inside.append(s)
    return inside


async def test_score_selection_is_the_sum_of_its_tokens_logprobs(tiny_client, tiny_gpt2_engine):
    uri = "file:///score/fox.txt"
    open_document(tiny_client, uri, TEXT)
    before = len(tiny_client.messages)
    result = await run(tiny_client, "logitls.scoreSelection", selection(uri, 4, 19))  # "quick brown fox"
    inside = expected_selection(tiny_gpt2_engine, TEXT, 4, 19)
    assert [s.token.text for s in inside] == [" quick", " brown", " fox"]  # " quick" counts: only its space is out
    logprob = sum(s.logprob for s in inside)
    assert result["tokens"] == 3
    assert result["logprob"] == pytest.approx(logprob, abs=1e-4)
    assert result["bits"] == pytest.approx(-logprob / math.log(2), abs=1e-4)
    assert result["bitsPerToken"] == pytest.approx(-logprob / 3 / math.log(2), abs=1e-4)
    assert result["perplexity"] == pytest.approx(math.exp(-logprob / 3), rel=1e-4)
    worst = min(inside, key=lambda s: s.logprob)
    assert result["leastLikely"]["text"] == worst.token.text and result["leastLikely"]["rank"] == worst.rank
    assert (result["start"], result["end"], result["text"]) == (3, 19, " quick brown fox")
    assert result["range"] == {"start": {"line": 0, "character": 3}, "end": {"line": 0, "character": 19}}
    assert result["uri"] == uri
    shown = [m.message for m in tiny_client.messages[before:]]
    assert any("bits/token" in m and "perplexity" in m for m in shown)


async def test_a_token_straddling_the_start_by_a_letter_does_not_count(tiny_client, tiny_gpt2_engine):
    uri = "file:///score/straddle.txt"
    open_document(tiny_client, uri, TEXT)
    result = await run(tiny_client, "logitls.scoreSelection", selection(uri, 5, 19))  # "uick brown fox"
    inside = expected_selection(tiny_gpt2_engine, TEXT, 5, 19)
    assert [s.token.text for s in inside] == [" brown", " fox"]
    assert result["tokens"] == 2
    assert result["logprob"] == pytest.approx(sum(s.logprob for s in inside), abs=1e-4)


async def test_code_action_offers_the_command(tiny_client, tiny_gpt2_engine):
    uri = "file:///score/action.txt"
    open_document(tiny_client, uri, TEXT)

    def params(start, end, only=None):
        return types.CodeActionParams(
            text_document=doc(uri), range=types.Range(start=types.Position(line=0, character=start),
                                                      end=types.Position(line=0, character=end)),
            context=types.CodeActionContext(diagnostics=[], only=only))

    # nothing selected: no scoring (the branch actions for the token there are another feature's)
    assert not await tiny_client.text_document_code_action_async(params(4, 4, [types.CodeActionKind.Source]))
    assert not await tiny_client.text_document_code_action_async(params(4, 19, [types.CodeActionKind.QuickFix]))
    # lsprotocol's client side reads any code action with a command as a Command: read the raw answer
    wire = Wire(tiny_client)
    wire.send({"jsonrpc": "2.0", "id": "action-1", "method": "textDocument/codeAction",
               "params": {"textDocument": {"uri": uri}, "context": {"diagnostics": []},
                          "range": {"start": {"line": 0, "character": 20}, "end": {"line": 0, "character": 43}}}})
    await wire.until(["action-1"])
    [(answer, error)] = wire.answers["action-1"]
    assert error is None
    # the branch actions for the token at the selection's start come after scoring's
    action = answer[0] if isinstance(answer[0], dict) else tiny_client.protocol._converter.unstructure(answer[0])
    assert action["title"] == "Score selection (logitls)" and action["kind"] == "source"
    assert all(a["kind"] == "refactor.rewrite" for a in answer[1:])
    assert action["command"]["command"] == "logitls.scoreSelection"
    result = await run(tiny_client, action["command"]["command"], *action["command"]["arguments"])
    inside = expected_selection(tiny_gpt2_engine, TEXT, 20, 43)
    assert result["tokens"] == len(inside) == 5
    assert result["logprob"] == pytest.approx(sum(s.logprob for s in inside), abs=1e-4)


async def test_compare_tiny_numbers(tiny_client):
    a_uri, b_uri = "file:///score/a.txt", "file:///score/b.txt"
    open_document(tiny_client, a_uri, TEXT)
    open_document(tiny_client, b_uri, "Some other words here.\n" + TEXT)
    a = await run(tiny_client, "logitls.scoreSelection", selection(a_uri, 4, 19))
    b = await run(tiny_client, "logitls.scoreSelection", selection(b_uri, 4, 19, line=1))
    both = await run(tiny_client, "logitls.compareSelections", {"a": selection(a_uri, 4, 19),
                                                                "b": selection(b_uri, 4, 19, line=1)})
    assert both["a"]["logprob"] == pytest.approx(a["logprob"]) and both["b"]["logprob"] == pytest.approx(b["logprob"])
    assert both["bitsPerTokenDifference"] == pytest.approx(a["bitsPerToken"] - b["bitsPerToken"])
    positional = await run(tiny_client, "logitls.compareSelections", selection(a_uri, 4, 19),
                           selection(b_uri, 4, 19, line=1))
    assert positional["bitsPerTokenDifference"] == pytest.approx(both["bitsPerTokenDifference"])


async def test_natural_sentence_is_less_surprising_than_a_shuffled_one(default_client):
    natural = "The children walked to school together in the morning."
    shuffled = "morning children the together school walked The in to."
    uri = "file:///score/sentences.txt"
    open_document(default_client, uri, f"{shuffled}\n{natural}\n")
    before = len(default_client.messages)
    result = await run(default_client, "logitls.compareSelections", selection(uri, 0, len(shuffled)),
                       selection(uri, 0, len(natural), line=1))
    assert result["bitsPerTokenDifference"] > 1.0
    assert result["summary"].startswith(f"B is {result['bitsPerTokenDifference']:.2f} bits/token less surprising")
    assert any("less surprising than A" in m.message for m in default_client.messages[before:])


@pytest.mark.parametrize("arguments, message", [
    ([], "expected one argument"),
    ([{"range": {}}], "textDocument.uri is missing"),
    ([{"textDocument": {"uri": "file:///score/fox.txt"}}], "range is missing"),
    ([selection("file:///score/fox.txt", 5, 5)], "empty or reversed"),
    ([selection("file:///score/fox.txt", 9, 4)], "empty or reversed"),
    ([{"textDocument": {"uri": "file:///score/fox.txt"},
       "range": {"start": {"line": 0, "character": -1}, "end": {"line": 0, "character": 3}}}], "must be integers from 0"),
    ([selection("file:///score/fox.txt", 0, 3)], "no scored token"),  # "The": the first token, no score
    ([{"textDocument": {"uri": "file:///score/fox.txt"},
       "range": {"start": {"line": 0, "character": 4}, "end": {"line": 5, "character": 2}}}], "line"),
    ([selection("file:///score/nowhere.txt", 0, 3)], "unknown document"),
])
async def test_bad_arguments(tiny_client, arguments, message):
    open_document(tiny_client, "file:///score/fox.txt", TEXT)
    with pytest.raises(JsonRpcInvalidParams, match=message):
        await run(tiny_client, "logitls.scoreSelection", *arguments)


async def test_bad_compare_arguments(tiny_client):
    open_document(tiny_client, "file:///score/fox.txt", TEXT)
    with pytest.raises(JsonRpcInvalidParams, match="expected"):
        await run(tiny_client, "logitls.compareSelections", selection("file:///score/fox.txt", 4, 19))
    with pytest.raises(JsonRpcInvalidParams, match="selection B"):
        await run(tiny_client, "logitls.compareSelections", selection("file:///score/fox.txt", 4, 19), {})


async def test_hover_shows_entropy_and_margin(tiny_client, tiny_gpt2_engine):
    uri = "file:///score/hover.txt"
    open_document(tiny_client, uri, TEXT)
    hover = await tiny_client.text_document_hover_async(types.HoverParams(
        text_document=doc(uri), position=types.Position(line=0, character=17)))  # in " fox", token 3
    ids = tiny_gpt2_engine.tokenizer(TEXT)["input_ids"]
    with torch.inference_mode():
        logprobs = torch.log_softmax(reference_model(tiny_gpt2_engine)(torch.tensor([ids])).logits[0].float(), -1)
    row = logprobs[2]  # the distribution " fox" was drawn from
    entropy = float(-(row.exp() * row).sum()) / math.log(2)
    first, second = row.exp().topk(2).values.tolist()
    shown = re.search(r"entropy ([\d.]+) bits, top-two margin ([\d.]+)", hover.contents.value)
    assert shown, hover.contents.value
    assert float(shown.group(1)) == pytest.approx(entropy, abs=2e-3)  # printed to 3 decimals
    assert float(shown.group(2)) == pytest.approx(first - second, abs=2e-4)  # printed to 4


async def test_entropy_view_and_decision_points(tiny_models, tiny_gpt2_engine):
    from logitls.lens import ENTROPY_NAMES, entropy_bucket_of

    client = await start_session({"model": str(tiny_models["gpt2"]), "device": "cpu",
                                  "lens": {"view": "entropy", "decisionPoints": True, "decisionMargin": 0.08,
                                           "diagnostics": False}})
    try:
        uri = "file:///score/view.txt"
        open_document(client, uri, TEXT)
        legend = list(client.initialize_result.capabilities.semantic_tokens_provider.legend.token_types)
        assert legend[4:8] == list(ENTROPY_NAMES)
        result = await client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(
            text_document=doc(uri)))
        scores = tiny_gpt2_engine.document_scores(TEXT)
        scored = [s for s in scores.tokens if s.entropy_bits is not None]
        kinds = [legend[k] for k in result.data[3::5]]
        assert kinds == [ENTROPY_NAMES[entropy_bucket_of(s.entropy_bits)] for s in scored]
        assert set(kinds) <= set(ENTROPY_NAMES)
        report = await client.text_document_diagnostic_async(types.DocumentDiagnosticParams(text_document=doc(uri)))
        decisions = [d for d in report.items if d.code == "decision"]
        expected = [s for s in scored if s.margin < 0.08]
        assert expected, "the tiny model should have close calls in this sentence"
        assert len(decisions) == len(report.items) == len(expected)
        for d, s in zip(decisions, expected):
            assert d.severity == types.DiagnosticSeverity.Hint and d.message.startswith("decision point")
            assert d.data["margin"] == pytest.approx(s.margin, abs=1e-5)
            assert d.range.end.character == s.end
        # back to the rank view: the server asks the client to fetch the colours again
        before = len(client.refreshes)
        client.set_configuration({"logitls": {"lens": {"view": "rank"}}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        for _ in range(200):
            if "workspace/semanticTokens/refresh" in client.refreshes[before:]:
                break
            await asyncio.sleep(0.05)
        assert "workspace/semanticTokens/refresh" in client.refreshes[before:]
        result = await client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(
            text_document=doc(uri)))
        assert {legend[k] for k in result.data[3::5]} <= {"likely", "plausible", "unlikely", "surprising"}
    finally:
        await client.shutdown_session()
