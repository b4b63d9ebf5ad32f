"""The surprisal lens's shared pass: every token of a document scored once per document version.

Semantic tokens, surprise diagnostics, the code lens, `logitls.documentStats`, the selection scores,
hover and branch all read the same pass, so their numbers agree. The pass is debounced while typing,
runs at background priority in small chunks, and yields to any completion or hover that arrives
(it resumes where it stopped: the document's KV cache keeps the part already scored). A module the
features share: it imports none of them.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pygls.exceptions import JsonRpcContentModified, JsonRpcInvalidParams

from ..lens import DEFAULT_EDGES
from .worker import PRIORITY_BACKGROUND, JobCancelled, ModelUnavailable

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")


class LensUnavailable(Exception):
    """No lens for this document: it is too long, or the backend cannot score whole documents."""


class DocumentTooLong(LensUnavailable):
    pass


@dataclass
class LensPass:
    version: int | None
    text: str
    task: asyncio.Task
    compared_with: Any = None  # the compare model's engine this pass scores under too (None: none)


def bucket_edges(ls: LogitlsServer) -> tuple[int, int, int]:
    lens = ls.settings.lens
    edges = (lens.likely_rank, lens.plausible_rank, lens.unlikely_rank)
    if not edges[0] < edges[1] < edges[2]:
        logger.warning("lens ranks must increase (likelyRank < plausibleRank < unlikelyRank); using 10, 100, 1000")
        return DEFAULT_EDGES
    return edges


def refresh_lens_views(server: LogitlsServer) -> None:
    """After a lens setting changed (`lens.view`, the ranks, decision points): ask the client to fetch
    the colours, diagnostics and code lenses again, where it says it can be asked."""
    workspace = server.client_capabilities.workspace
    if workspace is None:
        return
    for capability, send in ((workspace.semantic_tokens, server.workspace_semantic_tokens_refresh),
                             (workspace.diagnostics, server.workspace_diagnostic_refresh),
                             (workspace.code_lens, server.workspace_code_lens_refresh)):
        if capability is not None and capability.refresh_support:
            future = send(None)
            # an error answer (a client that advertised but did not implement it) is only logged
            future.add_done_callback(lambda done: done.cancelled() or done.exception() is None
                                     or logger.debug("refresh failed: %s", done.exception()))


def engine_chunk(engine) -> int:
    if engine.capabilities.scored_remotely:
        return 0  # a server scores a window per request; the backend keeps finished windows
    from ..engine.engine import BACKGROUND_CHUNK  # the engine is loaded by now: no import cost

    return BACKGROUND_CHUNK


async def _score(ls: LogitlsServer, uri: str, text: str, debounce: bool, other: Any) -> Any:
    lens = ls.settings.lens
    if debounce and lens.debounce_ms:
        await asyncio.sleep(lens.debounce_ms / 1000)
    me = asyncio.current_task()

    def run(engine, should_stop):
        if not engine.capabilities.document_scores:
            # llama-cpp-python's echo scores a prompt slowly and llama-server needs a request per token: a
            # lens pass over a page would take minutes (README's backend table). Completion, hover and generate work.
            raise LensUnavailable(f"the surprisal lens needs the local backend or a vLLM server (backend: local, "
                                  f"or an endpoint served by vLLM); this one is {engine.loaded.server_kind}")
        n_tokens = engine.token_count(text) if text else 0
        if n_tokens > lens.max_document_tokens:
            raise DocumentTooLong(f"{n_tokens} tokens, more than lens.maxDocumentTokens ({lens.max_document_tokens})")
        scores = engine.document_scores(text, stride=lens.stride or None, document=uri, should_stop=should_stop,
                                        chunk_size=engine_chunk(engine))
        if other is None:
            return scores
        from ..engine.compare import with_comparison  # the engine is loaded by now: no import cost

        theirs = other.document_scores(text, stride=lens.stride or None, document=uri, should_stop=should_stop,
                                       chunk_size=engine_chunk(other))
        return with_comparison(scores, theirs)

    while True:
        record = ls.documents.peek(uri)
        current = record.lens_pass if record is not None else None
        if current is None or current.task is not me:
            raise JobCancelled("superseded by a newer version of the document")
        try:
            return await ls.run_model(run, key=(uri, "lens"), priority=PRIORITY_BACKGROUND,
                                      stop_when=ls.worker.interactive_waiting)
        except JobCancelled:
            # Yielded to a keystroke (or superseded: the loop's check above tells which).
            await asyncio.sleep(0.02)


async def document_scores(ls: LogitlsServer, uri: str, *, debounce: bool = True) -> tuple[str, Any]:
    """(text, scores) of the document as it is now; shares a pass already under way for this version."""
    text, version = ls.snapshot(uri)
    record = ls.documents(uri)
    current = record.lens_pass
    other = ls.compare_engine
    if current is None or current.version != version or current.text != text or current.compared_with is not other:
        # A fresh context: the shared pass must not stop because the request that started it was cancelled.
        task = asyncio.get_running_loop().create_task(_score(ls, uri, text, debounce, other),
                                                      context=contextvars.Context())
        # A pass superseded before anyone awaited it ends in JobCancelled: that is expected, not an error to log.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
        current = record.lens_pass = LensPass(version, text, task, other)
    try:
        return text, await asyncio.shield(current.task)
    except JobCancelled as exc:
        raise JsonRpcContentModified("the document changed; the lens will be computed for the new version") from exc


async def scores_if_enabled(ls: LogitlsServer, uri: str, feature_on: bool, what: str) -> tuple[str, Any] | None:
    """(text, scores) for a lens feature, or None when it is off or there is nothing to score (said
    in the log). An unknown document is an error either way."""
    if not (ls.settings.lens.enabled and feature_on):
        ls.snapshot(uri)
        return None
    try:
        return await document_scores(ls, uri)
    except (ModelUnavailable, LensUnavailable) as exc:
        logger.info("lens: no %s for %s: %s", what, uri, exc)
        return None


async def command_scores(ls: LogitlsServer, uri: str, command: str) -> tuple[str, Any]:
    """(text, scores) for a command that needs the lens pass: a clear InvalidParams where there is none."""
    ls.snapshot(uri)  # InvalidParams for a document that is not open
    try:
        return await document_scores(ls, uri, debounce=False)
    except ModelUnavailable as exc:
        raise JsonRpcInvalidParams(f"{command}: no model: {exc}") from exc
    except LensUnavailable as exc:
        raise JsonRpcInvalidParams(f"{command}: cannot score this document: {exc}") from exc


def score_at(engine, text: str, offset: int, uri: str, should_stop):
    """The scored token holding `offset`: at most one window's prefill locally (Engine.token_score_at),
    as little as a server can answer remotely."""
    return engine.token_score_at(text, offset, document=uri, should_stop=should_stop)


async def _lens_scores(ls: LogitlsServer, uri: str, text: str):
    """The lens pass's scores for this version of the document, shared rather than computed again
    (on a long document that is every earlier window); None where the lens cannot serve."""
    if not ls.settings.lens.enabled:
        return None
    try:
        scored_text, scores = await document_scores(ls, uri, debounce=False)
    except LensUnavailable:
        return None
    return scores if scored_text == text else None


async def scored_token(ls: LogitlsServer, uri: str, text: str, offset: int, feature: str = "hover"):
    """The scored token whose characters hold `offset` (the one the hover shows), or None.
    `feature` keys the model job: a newer request of the same feature on the document supersedes it.
    Raises ModelUnavailable or JobCancelled."""
    scores = await _lens_scores(ls, uri, text)
    if scores is not None:
        return scores.token_at(offset)
    return await _score_one(ls, uri, text, offset, feature)


async def _score_one(ls: LogitlsServer, uri: str, text: str, offset: int, feature: str):
    """One token's score without the lens: a window's prefill in small chunks that yields to any
    keystroke waiting (as the lens pass does) and goes on where it stopped (the hover slot keeps what
    was fed). A newer request of the same feature on the document supersedes this one for good: the
    generation tells a yield from that, so two hovers never take turns superseding each other."""
    record = ls.documents(uri)
    generation = record.generations[feature] = record.generations.get(feature, 0) + 1
    while True:
        progressed = [False]

        def run(engine, should_stop, progressed=progressed):
            if engine.capabilities.scored_remotely:  # one server request: nothing to yield between
                return score_at(engine, text, offset, uri, should_stop)

            def stop() -> bool:
                stopping = should_stop()
                progressed[0] = True  # later checks come after a chunk fed: from there the job may yield
                return stopping

            return score_at(engine, text, offset, uri, stop)

        try:
            # Each turn feeds at least one chunk before it yields: two hovers on two documents alternate
            # chunk by chunk, they never both stop before starting.
            return await ls.run_model(run, key=(uri, feature),
                                      stop_when=lambda progressed=progressed: progressed[0] and ls.worker.interactive_waiting())
        except JobCancelled:
            # A job stopped before the engine's first check did not yield: it was cancelled (or its document closed).
            if not progressed[0] or ls.documents.peek(uri) is not record or record.generations.get(feature) != generation:
                raise
            await asyncio.sleep(0)  # yielded: the waiting job was queued first and runs first


__all__ = ["command_scores", "document_scores", "bucket_edges", "refresh_lens_views", "score_at", "scored_token",
           "DocumentTooLong", "LensUnavailable", "ModelUnavailable"]
