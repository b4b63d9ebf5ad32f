"""The logitls language server object: the state every feature reads, and the model's entry point.

The features (lsp/features.py registers them) get this object as their handlers' `ls`: the settings,
the open documents' records, the position helpers, `run_model` (a job on the model thread) and the
ways to talk to the user. This module imports no feature, and never torch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Hashable

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled
from pygls.lsp.server import LanguageServer

from .. import __version__
from ..settings import Settings
from ..text import without_lone_surrogates
from .framing import DEFAULT_MAX_MESSAGE_BYTES
from .open_documents import OpenDocuments
from .positions import PositionError, PositionMap
from .protocol import LogitlsProtocol, converter
from .worker import PRIORITY_INTERACTIVE, JobCancelled, ModelUnavailable, ModelWorker

logger = logging.getLogger("logitls")

STATUS_NOTIFICATION = "logitls/status"  # {state: loading|ready|failed, model, message}: for status bars


@dataclass(frozen=True)
class CodeActionProvider:
    kind: str  # the CodeActionKind advertised for it
    actions: Callable[[Any, types.CodeActionParams], Awaitable[list[types.CodeAction]]]  # (ls, params)


class LogitlsServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("logitls", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         protocol_cls=LogitlsProtocol, converter_factory=converter)
        self.settings = Settings()
        self.worker = ModelWorker()
        self.engine: Any = None  # logitls.engine.Engine once loaded; only the worker thread touches it
        self.compare_engine: Any = None  # the lens.compareModel engine while that setting is on (lsp/compare.py)
        self.compare_spec = ""
        self.model_state = "loading"
        self.model_error: str | None = None
        self.model_settled = asyncio.Event()  # set once a load has succeeded or failed
        self.shutdown_requested = False
        self.client_info: types.ClientInfo | None = None  # from initialize
        self.load_generation = 0  # bumped by each model load: only the newest one settles the state
        self.documents = OpenDocuments(lambda uri: uri in self.workspace.text_documents)
        # textDocument/codeAction has one handler (lsp/code_actions.py); each feature adds its provider here
        self.code_action_providers: list[CodeActionProvider] = []
        self.max_message_bytes = DEFAULT_MAX_MESSAGE_BYTES  # `serve --max-message-bytes`

    # -- documents and positions ------------------------------------------------------------

    @property
    def position_encoding(self) -> str:
        return self.workspace.position_encoding or types.PositionEncodingKind.Utf16

    def snapshot(self, uri: str) -> tuple[str, int | None]:
        """The document's text and version now, as the model reads it (lone surrogates as U+FFFD, at
        the same offsets); InvalidParams for a document the client never opened."""
        document = self.workspace.text_documents.get(uri)
        if document is None:
            raise JsonRpcInvalidParams(f"unknown document {uri}: open it (textDocument/didOpen) first")
        return without_lone_surrogates(document.source), document.version

    def offset_at(self, text: str, position: types.Position) -> tuple[PositionMap, int]:
        positions = PositionMap(text, self.position_encoding)
        try:
            return positions, positions.offset(position)
        except PositionError as exc:
            raise JsonRpcInvalidParams(str(exc)) from exc

    def add_code_actions(self, kind: str, actions: Callable[[Any, types.CodeActionParams],
                                                            Awaitable[list[types.CodeAction]]]) -> None:
        """A feature's code actions of `kind`: `await actions(ls, params)` (lsp/code_actions.py gathers them)."""
        self.code_action_providers.append(CodeActionProvider(kind, actions))

    def forget_document(self, uri: str) -> None:
        """A closed document: its record goes, and so do the KV caches both models keep for it.

        Queued after any job still running for it: those stop at their next check (the document is
        closed), so none can put a KV cache back once this has run."""
        self.documents.forget(uri)
        for engine in (self.engine, self.compare_engine):
            if engine is not None:
                self.worker.enqueue(lambda _stop, engine=engine: engine.forget(uri), priority=-1)

    # -- the model ------------------------------------------------------------------------

    async def wait_for_model(self) -> Any:
        if not self.model_settled.is_set():
            try:
                # No shield: a timed-out wait must not leave its waiter behind until the load settles.
                await asyncio.wait_for(self.model_settled.wait(), self.settings.model_wait_seconds)
            except asyncio.TimeoutError as exc:
                raise ModelUnavailable("the model is still loading") from exc
        if self.engine is None:
            raise ModelUnavailable(self.model_error or "no model loaded")
        return self.engine

    async def run_model(self, fn: Callable[[Any, Callable[[], bool]], Any], *, key: Hashable | None,
                        priority: int = PRIORITY_INTERACTIVE,
                        stop_when: Callable[[], bool] | None = None) -> Any:
        """Run fn(engine, should_stop) on the model thread once a model is there.

        A key `(uri, feature)` ties the job to a document: a newer job with the same key supersedes
        it, and closing the document stops it (so it cannot put a KV cache back after the close).
        Raises ModelUnavailable when there is no model, JobCancelled when superseded or stopped.
        """
        request = self._current_request_future()
        engine = await self.wait_for_model()
        uri = key[0] if isinstance(key, tuple) and key and isinstance(key[0], str) else None

        def stopped() -> bool:
            return ((request is not None and request.cancelled()) or (stop_when is not None and stop_when())
                    or (uri is not None and not self.documents.is_open(uri)))

        return await self.worker.submit(lambda should_stop: fn(engine, should_stop), key=key,
                                        priority=priority, stop_when=stopped)

    def _current_request_future(self) -> Any:
        """The future pygls cancels on `$/cancelRequest` for the request being handled.

        For ordinary requests it is this handler's own task (cancelling it reaches our `await`);
        for workspace/executeCommand it is the outer generator's future, which pygls cancels
        without touching the command handler's task: polling it is the only way to hear the cancel.
        """
        return self.protocol._request_futures.get(self.protocol.msg_id)

    def set_status(self, state: str, message: str = "") -> None:
        self.model_state = state
        try:
            self.protocol.notify(STATUS_NOTIFICATION, {"state": state, "model": self.settings.model,
                                                       "message": message})
        except Exception:  # noqa: BLE001 - no client attached (yet)
            logger.debug("status notification not sent", exc_info=True)

    def report_server_error(self, error: Exception, source: Any) -> None:
        # pygls's read loop reports a body it could not parse here (as JsonRpcException), after
        # dropping it: answer it instead of showing the user "Error in server".
        if source is JsonRpcException and self.protocol.answer_unreadable(error):
            return
        super().report_server_error(error, source)

    # -- the transport ------------------------------------------------------------------

    def start_io(self, stdin: Any = None, stdout: Any = None) -> None:
        """pygls's stdio server, reading with framing.py's reader instead of pygls's loop."""
        import sys

        from pygls.io_ import StdoutWriter

        from .framing import MessageReader, run_messages

        self._stop_event = threading.Event()
        source = stdin or sys.stdin.buffer
        read_some = getattr(source, "read1", source.read)
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))

        async def read(n: int) -> bytes:
            return await asyncio.get_running_loop().run_in_executor(self.thread_pool, read_some, n)

        try:
            asyncio.run(run_messages(MessageReader(read, self.max_message_bytes), self))
        except BrokenPipeError:
            logger.error("Connection to the client is lost! Shutting down the server.")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    # -- talking to the user --------------------------------------------------------------

    def tell(self, message: str, kind: types.MessageType = types.MessageType.Info) -> None:
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"logitls: {message}"))


# InvalidParams, RequestCancelled, ContentModified, ServerCancelled
EXPECTED_ERROR_CODES = {JsonRpcInvalidParams.CODE, JsonRpcRequestCancelled.CODE, -32801, -32802}


class _ExpectedErrorFilter(logging.Filter):
    """pygls logs every error answer with a traceback, and every message it could not parse; bad
    params, cancellations and unparseable messages are answers (protocol.py), not bugs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.name == "pygls.server":  # its read loop: json.loads failed; answered as ParseError
            return not isinstance(exc, (ValueError, RecursionError))
        return getattr(exc, "code", None) not in EXPECTED_ERROR_CODES


def quiet_expected_errors() -> None:
    for name in ("pygls.protocol.json_rpc", "pygls.server"):
        logging.getLogger(name).addFilter(_ExpectedErrorFilter())


__all__ = ["LogitlsServer", "ModelUnavailable", "JobCancelled", "STATUS_NOTIFICATION"]
