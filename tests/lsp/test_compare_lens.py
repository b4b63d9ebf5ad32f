"""lens.compareModel through `logitls serve`: both probabilities in the hover, the compare view's
colours, the second model dropped when the setting is cleared, a different tokenizer refused."""

from __future__ import annotations

import asyncio
import math
import shutil

from lsprotocol import types

from conftest import engine_for, open_document, server_status, start_session

TEXT = "Udacity is the best place to learn about generative models"


async def wait_for_compare(client, expected, timeout: float = 120.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (status := await server_status(client))["compareModel"] != expected:
        if loop.time() > deadline:
            raise TimeoutError(f"compareModel never became {expected!r}: {status}")
        await asyncio.sleep(0.05)
    return status


async def test_compare_view_hover_and_release(tiny_models):
    main, other = str(tiny_models["gpt2"]), str(tiny_models["llama"])
    client = await start_session({"model": main, "lens": {"compareModel": other, "view": "compare", "debounceMs": 0}})
    try:
        await wait_for_compare(client, other)
        uri = "file:///compare/text.txt"
        open_document(client, uri, TEXT)
        ours = engine_for(tiny_models["gpt2"]).document_scores(TEXT)
        theirs = engine_for(tiny_models["llama"]).document_scores(TEXT)
        # the hover over ' best' shows both models' probabilities
        best = next(s for s in ours.tokens if s.token.text == " best")
        hover = await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=best.start + 1)))
        other_p = math.exp(theirs.tokens[best.index].logprob)
        assert f"under the compared model: p = {other_p:.4g}" in hover.contents.value
        assert f"log-ratio {best.logprob - theirs.tokens[best.index].logprob:+.3f} nats" in hover.contents.value
        # semantic tokens: the compare view's types, one per token whose log-ratio passes 0.1 nats
        legend = client.initialize_result.capabilities.semantic_tokens_provider.legend.token_types
        tokens = await client.text_document_semantic_tokens_full_async(types.SemanticTokensParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        kinds = [legend[t] for t in tokens.data[3::5]]
        from logitls.lens import COMPARE_NAMES, compare_bucket_of

        expected = [COMPARE_NAMES[b] for a, o in zip(ours.tokens, theirs.tokens)
                    if a.logprob is not None and (b := compare_bucket_of(a.logprob - o.logprob)) is not None]
        assert kinds == expected and set(kinds) <= set(COMPARE_NAMES)
        # clearing the setting drops the second model
        client.set_configuration({"logitls": {"model": main, "lens": {"compareModel": "", "view": "rank"}}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        await wait_for_compare(client, None)
        hover = await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=best.start + 1)))
        assert "compared model" not in hover.contents.value
    finally:
        await client.shutdown_session()


async def test_a_model_with_another_tokenizer_is_refused(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    odd = tmp_path / "odd-tokenizer-model"
    shutil.copytree(tiny_models["llama"], odd)
    tokenizer = AutoTokenizer.from_pretrained(odd)
    tokenizer.add_tokens(["<an-extra-token>"])
    tokenizer.save_pretrained(odd)
    client = await start_session({"model": str(tiny_models["gpt2"]), "lens": {"compareModel": str(odd)}})
    try:
        for _ in range(600):
            if any("is not compared" in m.message for m in client.messages):
                break
            await asyncio.sleep(0.05)
        refused = [m for m in client.messages if "is not compared" in m.message]
        assert refused and "tokenize differently" in refused[0].message
        assert (await server_status(client))["compareModel"] is None
    finally:
        await client.shutdown_session()
