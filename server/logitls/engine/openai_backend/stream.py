"""Greedy generation streamed from a server: `temperature: 0, stream: true` (server-sent events), one
step per streamed chunk, on the transport's event loop; the caller's thread takes the steps from a
queue and polls its stop check, and a stop cancels the task, which closes the stream."""

from __future__ import annotations

import asyncio
import json
import queue
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator

import httpx

from ..types import Cancelled, GreedyStep
from .transport import POLL_SECONDS, BackendError, StopCheck

if TYPE_CHECKING:
    from .backend import OpenAIBackend


def greedy(backend: "OpenAIBackend", text: str, limit: int, should_stop: StopCheck | None,
           sampling: Any = None) -> Iterator[GreedyStep]:
    """`sampling`: a SamplingParams, sent as backend.sampling_body says; greedy (`temperature: 0`) without."""
    events: queue.Queue = queue.Queue()
    loop = backend.transport.ensure_loop()
    task = asyncio.run_coroutine_threadsafe(_pump(backend, text, limit, events, sampling), loop)
    try:
        while True:
            try:
                kind, value = events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if should_stop is not None and should_stop():
                    raise Cancelled() from None
                continue
            if kind == "step":
                yield value
            elif kind == "error":
                backend.report_failure(value)
                return
            else:  # done
                backend.report_success()
                return
            if should_stop is not None and should_stop():
                raise Cancelled()
    finally:
        task.cancel()  # closes the stream when the caller stops early, is cancelled, or is done


async def _pump(backend: "OpenAIBackend", text: str, limit: int, events: queue.Queue, sampling: Any) -> None:
    try:
        async for step in _steps(backend, text, limit, sampling):
            events.put(("step", step))
        events.put(("done", None))
    except BackendError as exc:
        events.put(("error", exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - anything else is a failed request, not a crash
        events.put(("error", BackendError("malformed", f"the inference server at {backend.base_url}: "
                                          f"{type(exc).__name__}: {exc}")))


async def _steps(backend: "OpenAIBackend", text: str, limit: int, sampling: Any) -> AsyncIterator[GreedyStep]:
    if not backend._probed:
        await backend._probe()
    body = {"model": backend.model_name, **backend.dialect.request_extra(), "prompt": text, "max_tokens": limit,
            **backend.sampling_body(sampling), "stream": True}
    tries = backend.transport.tries()
    for attempt in range(tries):
        if attempt:
            await asyncio.sleep(backend.transport.backoff * (2 ** (attempt - 1)))
        produced = 0
        try:
            async with backend.transport.client.stream("POST", "/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    error = backend.transport.http_error(response)
                    if response.status_code < 500 or attempt == tries - 1:
                        raise error
                    continue
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        chunk = json.loads(data)
                        choice = chunk["choices"][0]
                    except (ValueError, KeyError, IndexError, TypeError) as exc:
                        raise BackendError("malformed", f"the inference server at {backend.base_url} sent a "
                                           f"malformed stream event: {data[:120]!r}") from exc
                    piece = choice.get("text") or ""
                    if piece or not choice.get("finish_reason"):
                        produced += 1
                        yield GreedyStep(backend.token(piece), piece)
                    if choice.get("finish_reason") == "stop":
                        yield GreedyStep(backend.eos_token, "")
                    if choice.get("finish_reason"):
                        return
                return
        except httpx.TransportError as exc:
            if produced or attempt == tries - 1:  # a stream cut half-way is not retried: text would repeat
                kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable"
                raise BackendError(kind, f"the inference server at {backend.base_url} "
                                   f"{'stopped answering mid-stream' if produced else 'cannot be reached'} "
                                   f"({type(exc).__name__}: {exc or 'connection failed'})") from exc

