"""Start-up, settings, model failure and recovery, shutdown, and a clean stdout."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest
from lsprotocol import types

from conftest import (SERVER_COMMAND, hold_model_thread, open_document, release_model_thread, server_status,
                      start_session, wait_for_status, wait_until_held, wait_until_queued)



def complete(client, uri: str, line: int, character: int):
    return client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character)))


async def test_model_loads_in_the_background_with_progress(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"])}, wait_ready=False)
    try:
        # A request sent before the model is ready waits for it rather than failing.
        open_document(client, "file:///life/early.txt", "hello")
        result = await complete(client, "file:///life/early.txt", 0, 5)
        assert len(result.items) == 10
        loading = [r for r in client.progress_reports.values() if r and getattr(r[0], "title", "") == "logitls"]
        assert loading and "Loading model" in loading[0][0].message
        assert isinstance(loading[0][-1], types.WorkDoneProgressEnd)
        assert [s["state"] for s in client.statuses][:2] == ["loading", "ready"]
    finally:
        await client.shutdown_session()


async def test_a_model_that_fails_to_load_is_reported_and_recovers(tiny_models):
    client = await start_session({"model": "/no/such/model"})
    try:
        assert client.statuses[-1]["state"] == "failed"
        errors = [m for m in client.messages if m.type == types.MessageType.Error]
        assert errors and "/no/such/model" in errors[0].message and "does not exist" in errors[0].message
        open_document(client, "file:///life/fail.txt", "hello")
        assert list((await complete(client, "file:///life/fail.txt", 0, 5)).items) == []  # empty, not an error
        # fixing the setting loads the model
        seen = len(client.statuses)
        client.set_configuration({"logitls": {"model": str(tiny_models["gpt2"])}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        assert await wait_for_status(client, ("ready", "failed"), after=seen) == "ready"
        assert len((await complete(client, "file:///life/fail.txt", 0, 5)).items) == 10
    finally:
        await client.shutdown_session()


async def test_settings_change_without_and_with_reload(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"]), "completion": {"tokenHealing": False}})
    try:
        open_document(client, "file:///life/settings.txt", "hello world")
        assert len((await complete(client, "file:///life/settings.txt", 0, 11)).items) == 10
        loads = len(client.statuses)
        client.set_configuration({"logitls": {"model": str(tiny_models["gpt2"]), "topN": 4,
                                              "completion": {"tokenHealing": False}}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        for _ in range(100):
            if len((await complete(client, "file:///life/settings.txt", 0, 11)).items) == 4:
                break
            await asyncio.sleep(0.05)
        assert len((await complete(client, "file:///life/settings.txt", 0, 11)).items) == 4
        assert len(client.statuses) == loads  # topN does not reload the model
        # an invalid value is refused with a warning, the previous one kept
        client.set_configuration({"logitls": {"model": str(tiny_models["gpt2"]), "topN": 0}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        await asyncio.sleep(0.3)
        assert any("topN must be at least 1" in m.message for m in client.messages
                   if m.type == types.MessageType.Warning)
        assert len((await complete(client, "file:///life/settings.txt", 0, 11)).items) == 4
        # a new model reloads
        client.set_configuration({"logitls": {"model": str(tiny_models["llama"]), "topN": 4,
                                              "completion": {"tokenHealing": False}}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        assert await wait_for_status(client, ("ready",), after=loads + 1) == "ready"
        assert client.statuses[loads]["state"] == "loading"
        from conftest import engine_for

        llama = engine_for(tiny_models["llama"])
        items = (await complete(client, "file:///life/settings.txt", 0, 11)).items
        expected = [c.id for c in llama.next_tokens("hello world", 40).choices
                    if not c.token.special and not c.token.partial][:4]
        assert [i.data["id"] for i in items] == expected
    finally:
        await client.shutdown_session()


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def read_frames(data: bytes, partial: bool = False) -> list[dict]:
    """Parse stdout strictly as LSP frames: any stray byte fails the test."""
    frames = []
    while data:
        header, sep, rest = data.partition(b"\r\n\r\n")
        if partial and (not sep or len(rest) < int(dict(l.split(b": ", 1) for l in header.split(b"\r\n"))
                                                   .get(b"Content-Length", b"0"))):
            break
        assert sep, f"stdout holds something that is not an LSP frame: {data[:200]!r}"
        fields = dict(line.split(b": ", 1) for line in header.split(b"\r\n"))
        assert set(fields) <= {b"Content-Length", b"Content-Type"}, f"not an LSP header: {header[:200]!r}"
        length = int(fields[b"Content-Length"])
        frames.append(json.loads(rest[:length]))
        data = rest[length:]
    return frames


def test_stdout_carries_only_json_rpc_and_exit_is_prompt(tiny_models):
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"capabilities": {"window": {"workDoneProgress": True}},
                    "initializationOptions": {"model": str(tiny_models["gpt2"]), "logLevel": "debug"}}},
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///life/raw.txt", "languageId": "plaintext", "version": 1, "text": "hello"}}},
        {"jsonrpc": "2.0", "id": 2, "method": "textDocument/completion", "params": {
            "textDocument": {"uri": "file:///life/raw.txt"}, "position": {"line": 0, "character": 5}}},
    ]
    process = subprocess.Popen(SERVER_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=dict(os.environ, HF_HUB_OFFLINE="1"))
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    out = b""

    def read_until_answered(request_id: int) -> None:
        nonlocal out
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(f.get("id") == request_id and "method" not in f for f in read_frames(out, partial=True)):
                return
            if selector.select(timeout=1):
                chunk = os.read(process.stdout.fileno(), 65536)
                assert chunk, "the server closed stdout"
                out += chunk
        raise TimeoutError(request_id)

    process.stdin.write(b"".join(frame(m) for m in messages))
    process.stdin.flush()
    read_until_answered(2)
    process.stdin.write(frame({"jsonrpc": "2.0", "id": 3, "method": "shutdown"}))
    process.stdin.flush()
    read_until_answered(3)  # an editor waits for the shutdown answer before `exit`
    process.stdin.write(frame({"jsonrpc": "2.0", "method": "exit"}))
    process.stdin.flush()
    started = time.monotonic()
    assert process.wait(timeout=300) == 0
    assert time.monotonic() - started < 10
    out += process.stdout.read()
    frames = read_frames(out)
    by_id = {f.get("id"): f for f in frames if "id" in f and "method" not in f}
    assert by_id[1]["result"]["capabilities"]["completionProvider"]
    assert "result" in by_id[2], by_id[2]
    assert len(by_id[2]["result"]["items"]) == 10
    assert by_id[3]["result"] is None
    assert any(f.get("method") == "window/logMessage" for f in frames)
    assert b"model" in process.stderr.read()  # logs go to stderr


def test_losing_the_client_ends_the_server(tiny_models):
    process = subprocess.Popen(SERVER_COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    process.stdin.write(frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "capabilities": {}, "initializationOptions": {"model": str(tiny_models["gpt2"])}}}))
    process.stdin.flush()
    time.sleep(1)
    process.stdin.close()  # the editor died
    assert process.wait(timeout=300) == 0


async def test_initialize_answers_before_the_model_is_loaded(tiny_models):
    started = time.monotonic()
    client = await start_session({"model": "default"}, wait_ready=False)
    try:
        initialized_after = time.monotonic() - started
        state = await wait_for_status(client, ("ready", "failed"))
        ready_after = time.monotonic() - started
        assert state == "ready"
        assert client.statuses[0]["state"] == "loading"  # initialize was answered while loading
        assert initialized_after < ready_after
    finally:
        await client.shutdown_session()


def test_tcp_listens_on_localhost(tiny_models):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([*SERVER_COMMAND, "--tcp", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise AssertionError("the server never listened")
        with connection:
            connection.sendall(frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "capabilities": {}, "initializationOptions": {"model": str(tiny_models["gpt2"])}}}))
            data = b""
            while b"capabilities" not in data:
                chunk = connection.recv(65536)
                assert chunk
                data += chunk
        assert b'"completionProvider"' in data
    finally:
        process.kill()
        process.wait()
    assert "listening on 127.0.0.1:" in process.stderr.read().decode()


async def test_closing_a_document_forgets_it(tiny_client):
    uri = "file:///life/closed.txt"
    open_document(tiny_client, uri, "hello")
    assert (await complete(tiny_client, uri, 0, 5)).items
    tiny_client.text_document_did_close(types.DidCloseTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=uri)))
    from pygls.exceptions import JsonRpcInvalidParams

    with pytest.raises(JsonRpcInvalidParams, match="unknown document"):
        await complete(tiny_client, uri, 0, 5)


async def test_a_load_that_fails_while_settings_change_still_settles(tiny_models):
    """A settings change during a load (even one that needs no reload, like topN) must not leave the
    server waiting for a load that already ended: the failure is reported, and fixing the model loads."""
    client = await start_session({"model": "/no/such/model"}, wait_ready=False,
                                 env={"LOGITLS_TEST_HOLD_AT_START": "model-load:0"})
    try:
        await wait_until_held(client, 0)  # the load is held before it starts
        client.set_configuration({"logitls": {"model": "/no/such/model", "topN": 4}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        await server_status(client)  # the change has been taken in
        release_model_thread(client)
        assert await wait_for_status(client, ("ready", "failed"), timeout=600) == "failed"
        open_document(client, "file:///life/settling.txt", "hello")
        assert list((await asyncio.wait_for(complete(client, "file:///life/settling.txt", 0, 5), 600)).items) == []
        seen = len(client.statuses)
        client.set_configuration({"logitls": {"model": str(tiny_models["gpt2"]), "topN": 4}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        assert await wait_for_status(client, ("ready", "failed"), after=seen, timeout=600) == "ready"
        assert len((await complete(client, "file:///life/settling.txt", 0, 5)).items) == 4
    finally:
        release_model_thread(client)
        await client.shutdown_session()


async def test_settings_changed_during_a_load_reach_the_new_model(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"]), "cachedDocuments": 4}, wait_ready=False,
                                 env={"LOGITLS_TEST_HOLD_AT_START": "model-load:0"})
    try:
        await wait_until_held(client, 0)
        client.set_configuration({"logitls": {"model": str(tiny_models["gpt2"]), "cachedDocuments": 1}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        await server_status(client)
        release_model_thread(client)
        assert await wait_for_status(client, ("ready", "failed")) == "ready"
        for name in ("a", "b", "c"):
            open_document(client, f"file:///life/{name}.txt", "hello world")
            assert (await complete(client, f"file:///life/{name}.txt", 0, 11)).items
        assert (await server_status(client))["cachedDocuments"] == ["file:///life/c.txt"]
    finally:
        release_model_thread(client)
        await client.shutdown_session()


async def test_closing_a_document_forgets_everything_it_held(tiny_models):
    """Closing frees the document's KV cache and lens state, even while its lens pass is mid-way:
    the pass stops and cannot put the cache back after the close."""
    client = await start_session({"model": str(tiny_models["gpt2"]), "lens": {"debounceMs": 0}})
    try:
        uri = "file:///life/closing.txt"
        open_document(client, "file:///life/kept.txt", "hello world")
        assert (await complete(client, "file:///life/kept.txt", 0, 11)).items
        # Armed before the open: the pass that the open starts (pushed diagnostics) is the one held.
        mark = hold_model_thread(client, at_check=1, key_contains=f"{uri}', 'lens")
        open_document(client, uri, " ".join(f"word{i}" for i in range(20)))  # one window, two chunks
        tokens = asyncio.ensure_future(client.text_document_semantic_tokens_full_async(
            types.SemanticTokensParams(text_document=types.TextDocumentIdentifier(uri=uri))))
        await wait_until_held(client, mark)  # the lens pass is scoring the closing document
        before = await server_status(client)
        assert before["documentRecords"] == 2 and uri in before["cachedDocuments"]
        client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        release_model_thread(client)
        with pytest.raises(Exception):
            await asyncio.wait_for(tokens, 600)  # closed mid-pass: an error answer, not colours for a gone text
        after = await server_status(client)
        for _ in range(100):
            if uri not in after["cachedDocuments"]:
                break
            await asyncio.sleep(0.05)
            after = await server_status(client)
        assert after["openDocuments"] == ["file:///life/kept.txt"]
        assert after["documentRecords"] == 1 and after["cachedDocuments"] == ["file:///life/kept.txt"]
    finally:
        release_model_thread(client)
        await client.shutdown_session()


async def test_a_dtype_change_during_a_load_wins(tiny_models):
    """The first load is held before it starts; a dtype change arrives meanwhile: the model that serves
    in the end is the one of the newest settings, and the older load settles nothing."""
    model = str(tiny_models["llama"])
    client = await start_session({"model": model, "device": "cpu", "logLevel": "debug"}, wait_ready=False,
                                 env={"LOGITLS_TEST_HOLD_AT_START": "model-load:0"})
    try:
        await wait_until_held(client, 0)
        client.set_configuration({"logitls": {"model": model, "device": "cpu", "dtype": "bfloat16"}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        await wait_until_queued(client, 1)  # the newer load waits behind the held one
        release_model_thread(client)
        assert await wait_for_status(client, ("ready", "failed")) == "ready"
        status = await server_status(client)
        assert status["dtype"] == "bfloat16" and status["state"] == "ready"
        assert [s["state"] for s in client.statuses].count("ready") == 1  # the superseded load said nothing
    finally:
        await client.shutdown_session()


async def test_a_keystroke_during_a_reload_waits_for_the_load_and_nothing_else(tiny_models):
    """A completion sent while a reload runs is answered right after the load: the worker runs no other
    job in between (no check, no handover, no heap work ahead of it)."""
    model = str(tiny_models["llama"])
    client = await start_session({"model": str(tiny_models["gpt2"]), "device": "cpu", "logLevel": "debug",
                                  "completion": {"tokenHealing": False}})
    try:
        open_document(client, "file:///life/reload.txt", "hello world")
        mark = hold_model_thread(client, 0, "model-load")
        client.set_configuration({"logitls": {"model": model, "device": "cpu", "logLevel": "debug",
                                              "completion": {"tokenHealing": False}}})
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        await wait_until_held(client, mark)
        logged = len(client.log_messages)
        menu = asyncio.ensure_future(complete(client, "file:///life/reload.txt", 0, 11))
        await asyncio.sleep(0)  # the request is on its way while the load is held
        release_model_thread(client)
        assert len((await asyncio.wait_for(menu, 600)).items) == 10
        jobs = [m.message.rsplit(":", 1)[0] for m in client.log_messages[logged:] if m.message.startswith("model job")]
        load = next(i for i, job in enumerate(jobs) if "model-load" in job)
        menu_job = next(i for i, job in enumerate(jobs) if "completion" in job)
        between = jobs[load + 1: menu_job]
        assert all("configure" in job for job in between), jobs
    finally:
        await client.shutdown_session()
