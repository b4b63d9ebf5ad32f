"""The server-side measurements (4-6): a real `logitls serve` process driven over stdio."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from lsprotocol import types

from .engine_bench import TYPED


def peak_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def _bench(model: str, dtype: str, threads: int, document: str, long_documents: list[str],
                 keys: int, weights: str) -> dict[str, Any]:
    from ..editor_session import EditorSession

    session = EditorSession("logitls-bench")
    client = session.client
    started = time.perf_counter()
    initialize_ms = await session.start({"model": model, "dtype": dtype, "threads": threads, "weights": weights,
                                         "inline": {"enabled": False}})
    uri = "file:///bench/document.py"
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=1, text="import os")))
    await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=9)))
    first_completion_ms = (time.perf_counter() - started) * 1000
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="logitls.status"))
    first_forward = (status or {}).get("forward")  # "native" (llama.py) or "transformers"

    # keystrokes at the end of a ~1000-token document
    text = document
    version = 2
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    def end_of(text: str) -> types.Position:
        lines = text.split("\n")
        return types.Position(line=len(lines) - 1, character=len(lines[-1]))  # ASCII: UTF-16 = str length

    await client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=end_of(text)))
    times = []
    for i in range(keys):
        char = TYPED[i % len(TYPED)]
        position = end_of(text)
        text += char
        version += 1
        t = time.perf_counter()
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangePartial(
                range=types.Range(start=position, end=position), text=char)]))
        await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=end_of(text)))
        times.append((time.perf_counter() - t) * 1000)

    # ten open documents of ~2000 tokens each
    for n, long_text in enumerate(long_documents):
        long_uri = f"file:///bench/long{n}.py"
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=long_uri, language_id="python", version=1, text=long_text)))
        await client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=long_uri), position=end_of(long_text)))
    rss = peak_rss_mb(session.pid)
    await session.stop()
    return {"initialize_ms": initialize_ms, "first_completion_ms": first_completion_ms, "first_forward": first_forward,
            "lsp_keystroke_ms": statistics.median(times), "peak_rss_mb": rss}


def run_lsp_bench(model: str, dtype: str, threads: int, document: str, long_documents: list[str],
                  keys: int = 20, weights: str = "auto") -> dict[str, Any]:
    return asyncio.run(_bench(model, dtype, threads, document, long_documents, keys, weights))
