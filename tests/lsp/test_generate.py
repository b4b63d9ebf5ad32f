"""The logitls.generate command end to end: the inserted text, progress, cancellation, stale edits."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled

from conftest import (NOTEBOOK_TEXT, edits_for, hold_model_thread, open_document, record_applied_edits,
                      release_model_thread, start_session, wait_until_held, wait_until_queued)



def generate_args(uri: str, line: int, character: int, **extra):
    return [{"textDocument": {"uri": uri}, "position": {"line": line, "character": character}, **extra}]


def run_generate(client, arguments):
    return client.workspace_execute_command_async(types.ExecuteCommandParams(command="logitls.generate",
                                                                             arguments=arguments))


@pytest.fixture(autouse=True)
def record_edits(request):
    for name in ("tiny_client", "default_client"):
        if name in request.fixturenames:
            client = request.getfixturevalue(name)
            record_applied_edits(client)


async def test_generate_inserts_the_greedy_continuation(tiny_client, tiny_gpt2_engine):
    uri = "file:///generate/notebook.txt"
    open_document(tiny_client, uri, NOTEBOOK_TEXT)
    result = await run_generate(tiny_client, generate_args(uri, 0, len(NOTEBOOK_TEXT), maxNewTokens=8))
    expected = tiny_gpt2_engine.generate_text(NOTEBOOK_TEXT, max_new_tokens=8)
    assert result["text"] == expected and result["applied"] is True
    [[edit]] = edits_for(tiny_client, uri)
    cursor = types.Position(line=0, character=len(NOTEBOOK_TEXT))
    assert edit.range == types.Range(start=cursor, end=cursor)
    assert edit.new_text == expected


async def test_generate_reports_progress(tiny_client):
    uri = "file:///generate/progress.txt"
    open_document(tiny_client, uri, "hello")
    before = set(tiny_client.progress_reports)
    await run_generate(tiny_client, generate_args(uri, 0, 5, maxNewTokens=5))
    new = [tiny_client.progress_reports[t] for t in set(tiny_client.progress_reports) - before]
    generate_reports = [r for r in new if r and getattr(r[0], "title", "") == "logitls: generating"]
    assert generate_reports, new
    assert isinstance(generate_reports[0][0], types.WorkDoneProgressBegin) and generate_reports[0][0].cancellable
    assert isinstance(generate_reports[0][-1], types.WorkDoneProgressEnd)


@pytest.mark.parametrize("arguments, message", [
    ([], "expected one argument"),
    ([{"position": {"line": 0, "character": 0}}], "textDocument.uri is missing"),
    ([{"textDocument": {"uri": "file:///generate/never-opened.txt"}, "position": {"line": 0, "character": 0}}],
     "unknown document"),
    (generate_args("file:///generate/bad.txt", 0, "x"), "must be integers"),
    (generate_args("file:///generate/bad.txt", 7, 0), "past the end of the document"),
    (generate_args("file:///generate/bad.txt", 0, -1), "must be integers from 0"),
    (generate_args("file:///generate/bad.txt", 2 ** 40, 0), "must be integers from 0"),
    (generate_args("file:///generate/bad.txt", 0, 0, maxNewTokens=0), "maxNewTokens must be"),
    (generate_args("file:///generate/bad.txt", 0, 0, maxNewTokens="many"), "maxNewTokens must be"),
])
async def test_wrong_arguments_are_invalid_params(tiny_client, arguments, message):
    open_document(tiny_client, "file:///generate/bad.txt", "abc")
    with pytest.raises(JsonRpcInvalidParams, match=message):
        await run_generate(tiny_client, arguments)


async def test_default_model_edit_equals_the_cli(default_client):
    prompt = "The capital of France is"
    uri = "file:///generate/france.txt"
    open_document(default_client, uri, prompt)
    result = await run_generate(default_client, generate_args(uri, 0, len(prompt), maxNewTokens=20))
    cli = subprocess.run([sys.executable, "-m", "logitls", "generate", prompt, "--max-new-tokens", "20"],
                         capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    assert result["text"] == cli.stdout[:-1]  # the CLI ends its output with a newline
    assert result["text"].startswith(" Paris.")
    assert [[e.new_text for e in edit] for edit in edits_for(default_client, uri)] == [[result["text"]]]


async def test_cancelling_the_progress_stops_and_inserts_nothing(default_client):
    uri = "file:///generate/cancel-progress.txt"
    open_document(default_client, uri, "Once upon a time")
    before = set(default_client.progress_reports)
    mark = hold_model_thread(default_client, at_check=3, key_contains=uri)
    task = asyncio.ensure_future(run_generate(default_client, generate_args(uri, 0, 16, maxNewTokens=400)))
    await wait_until_held(default_client, mark)  # a few tokens into the generation
    new = [t for t in set(default_client.progress_reports) - before
           if default_client.progress_reports[t]
           and getattr(default_client.progress_reports[t][0], "title", "") == "logitls: generating"]
    assert len(new) == 1
    default_client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=new[0]))
    release_model_thread(default_client)
    result = await asyncio.wait_for(task, 600)
    assert result["applied"] is False and result["stop"] == "cancelled"
    assert edits_for(default_client, uri) == []


async def test_cancel_request_stops_generation(default_client):
    uri = "file:///generate/cancel-request.txt"
    open_document(default_client, uri, "Once upon a time")
    mark = hold_model_thread(default_client, at_check=3, key_contains=uri)
    request = asyncio.wrap_future(default_client.protocol.send_request(
        types.WORKSPACE_EXECUTE_COMMAND,
        types.ExecuteCommandParams(command="logitls.generate", arguments=generate_args(uri, 0, 16, maxNewTokens=400)),
        msg_id="generate-to-cancel"))
    await wait_until_held(default_client, mark)
    default_client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="generate-to-cancel"))
    release_model_thread(default_client)
    with pytest.raises(JsonRpcRequestCancelled):
        await asyncio.wait_for(request, 600)
    # the model thread is free again at once: a completion answers without waiting for 400 tokens
    completion = await asyncio.wait_for(default_client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=16))), 600)
    assert completion.items
    assert edits_for(default_client, uri) == []


async def test_an_edit_during_generation_is_not_overwritten(default_client):
    uri = "file:///generate/stale.txt"
    open_document(default_client, uri, "Once upon a time")
    mark = hold_model_thread(default_client, at_check=3, key_contains=uri)
    task = asyncio.ensure_future(run_generate(default_client, generate_args(uri, 0, 16, maxNewTokens=60)))
    await wait_until_held(default_client, mark)
    default_client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=0, character=16), end=types.Position(line=0, character=16)),
            text=" there was")]))
    release_model_thread(default_client)
    result = await asyncio.wait_for(task, 600)
    assert result["applied"] is False and result["stop"] == "document-changed"
    assert edits_for(default_client, uri) == []
    assert any("changed while generating" in m.message for m in default_client.messages)


async def test_an_edit_the_editor_refuses_is_reported_not_an_internal_error(tiny_models):
    from pygls.exceptions import JsonRpcInternalError as EditorSaidNo

    client = await start_session({"model": str(tiny_models["gpt2"])})
    try:
        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def refuse(params):
            raise EditorSaidNo("the user said no")

        open_document(client, "file:///generate/refused.txt", "hello")
        result = await run_generate(client, generate_args("file:///generate/refused.txt", 0, 5, maxNewTokens=4))
        assert result["applied"] is False and result["text"]
        assert any("not inserted" in m.message for m in client.messages)
    finally:
        await client.shutdown_session()


async def test_the_time_cap_inserts_what_was_produced(default_client):
    default_client.set_configuration({"logitls": {"generate": {"timeoutSeconds": 1}}})
    default_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
    await asyncio.sleep(0.2)
    uri = "file:///generate/capped.txt"
    open_document(default_client, uri, "Once upon a time")
    try:
        result = await run_generate(default_client, generate_args(uri, 0, 16, maxNewTokens=1000))
    finally:
        default_client.set_configuration({"logitls": {}})
    assert result["stop"] == "timeout" and result["applied"] is True
    assert 0 < len(result["text"])
    assert [[e.new_text for e in edit] for edit in edits_for(default_client, uri)] == [[result["text"]]]
    assert any("generate.timeoutSeconds" in m.message for m in default_client.messages)


async def test_a_superseded_generate_is_server_cancelled_not_client_cancelled(tiny_client):
    """Only the client's own $/cancelRequest earns RequestCancelled: a newer generate on the same
    document supersedes the older one, which answers ServerCancelled (-32802)."""
    uri = "file:///generate/superseded.txt"
    open_document(tiny_client, uri, "hello there")
    mark = hold_model_thread(tiny_client, at_check=2, key_contains=uri)
    first = asyncio.ensure_future(run_generate(tiny_client, generate_args(uri, 0, 11, maxNewTokens=20)))
    await wait_until_held(tiny_client, mark)
    second = asyncio.ensure_future(run_generate(tiny_client, generate_args(uri, 0, 11, maxNewTokens=3)))
    await wait_until_queued(tiny_client)
    release_model_thread(tiny_client)
    with pytest.raises(JsonRpcException) as raised:
        await asyncio.wait_for(first, 600)
    assert raised.value.code == -32802 and "superseded" in raised.value.message
    assert (await asyncio.wait_for(second, 600))["applied"] is True


async def test_generate_with_sampling_arguments_and_a_seed_is_reproducible(tiny_client, tiny_gpt2_engine):
    from logitls.engine.sampling import SamplingParams

    uri = "file:///generate/sampled.txt"
    open_document(tiny_client, uri, NOTEBOOK_TEXT)
    end = len(NOTEBOOK_TEXT)
    sampled = dict(maxNewTokens=10, temperature=1.5, topK=50, seed=11)
    first = await run_generate(tiny_client, generate_args(uri, 0, end, **sampled))
    params = SamplingParams(temperature=1.5, top_k=50, seed=11)
    assert first["sampling"] == "temperature 1.5, top-k 50"
    assert first["text"] == "".join(s.text for s in tiny_gpt2_engine.sample(NOTEBOOK_TEXT, max_new_tokens=10,
                                                                            params=params))
    open_document(tiny_client, uri + "2", NOTEBOOK_TEXT)
    again = await run_generate(tiny_client, generate_args(uri + "2", 0, end, **sampled))
    assert again["text"] == first["text"]
    with pytest.raises(JsonRpcInvalidParams, match="topP must be in"):
        await run_generate(tiny_client, generate_args(uri, 0, 0, temperature=1.0, topP=0))
