"""Start-up through `logitls serve`: the default model first answers from the lean stand-in
(engine/lean_model.py, no transformers modeling code to import), and transformers' model takes its place
in the first quiet moment with the same numbers and every cached document kept."""

from __future__ import annotations

import asyncio

from lsprotocol import types

from conftest import open_document, release_model_thread, server_status, start_session, wait_for_status

TEXT = "The capital of France is "


async def _menu(client, uri: str) -> list[tuple[str, str | None]]:
    open_document(client, uri, TEXT)
    result = await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=len(TEXT))))
    items = result.items if isinstance(result, types.CompletionList) else result
    return [(item.label, item.detail) for item in items]


async def test_the_stand_in_answers_first_then_transformers_model_takes_over_with_the_same_menu():
    # the hook holds transformers' model back until released: the stand-in's answers are observable
    client = await start_session({"model": "default"}, env={"LOGITLS_TEST_HOLD_TRANSFORMERS": "1"})
    try:
        status = await server_status(client)
        assert (status["state"], status["forward"]) == ("ready", "lean")
        assert (status["weights"], status["kernel"]) == ("packed", "fp32")
        first = await _menu(client, "file:///lean/first.txt")
        assert "Paris" in first[0][0]
        release_model_thread(client)
        for _ in range(1200):  # at most two minutes, on the slowest machine
            status = await server_status(client)
            if status["forward"] == "transformers":
                break
            await asyncio.sleep(0.1)
        assert status["forward"] == "transformers"
        assert "file:///lean/first.txt" in status["cachedDocuments"]  # the stand-in's cache carried over
        assert await _menu(client, "file:///lean/second.txt") == first
        assert client.statuses[-1]["state"] == "ready"
        assert any("took over" in m.message and "same logits" in m.message for m in client.log_messages)
    finally:
        await client.shutdown_session()


async def test_a_model_changed_before_the_handover_is_not_replaced_by_it(tiny_models):
    client = await start_session({"model": "default"}, env={"LOGITLS_TEST_HOLD_TRANSFORMERS": "1"})
    try:
        assert (await server_status(client))["forward"] == "lean"
        loads = len(client.statuses)
        client.set_configuration({"logitls": {"model": str(tiny_models["gpt2"])}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        await wait_for_status(client, ("ready",), after=loads + 1)
        release_model_thread(client)  # the default model's handover may go on now: it must not land
        for _ in range(30):  # three seconds: well past the idle second it waits for
            await asyncio.sleep(0.1)
            status = await server_status(client)
            assert (status["model"], status["forward"]) == (str(tiny_models["gpt2"]), "transformers")
        assert client.statuses[-1]["message"].startswith(str(tiny_models["gpt2"]))
        assert not any("took over" in m.message for m in client.log_messages)  # nor loaded for nothing
    finally:
        await client.shutdown_session()
