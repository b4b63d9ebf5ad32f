"""What the commands that write into a document share (`logitls.generate`, `logitls.branch`).

A model job with a cancellable work-done progress (cancelling the progress or the request stops it, nothing is written);
and the edit itself, which names the document version it was computed for and is dropped, with a
message, if the user changed the document meanwhile: a stale edit never lands on text the user typed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Callable

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcRequestCancelled

from ..text import without_lone_surrogates
from .progress import begin_progress
from .worker import PRIORITY_COMMAND, JobCancelled, ModelUnavailable

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")

class JsonRpcServerCancelled(JsonRpcException):
    """LSP 3.17's ServerCancelled: the server, not the client, gave up on the request."""

    CODE = -32802
    MESSAGE = "Server Cancelled"


def supports_document_changes(server: LogitlsServer) -> bool:
    caps = server.client_capabilities
    return bool(caps.workspace and caps.workspace.workspace_edit and caps.workspace.workspace_edit.document_changes)


Report = Callable[[str, int], None]  # (text produced so far, tokens): thread-safe, from the model thread


async def run_with_progress(ls: LogitlsServer, *, uri: str, feature: str, title: str, total: int,
                            work: Callable[[Any, Callable[[], bool], Report], Any], command: str,
                            verb: str) -> tuple[str, Any]:
    """Run work(engine, should_stop, report) on the model thread with a cancellable progress.

    Returns ("ok", value), ("cancelled", None) when the user cancelled the progress, or ("no-model",
    None) after telling the user. A cancelled request raises RequestCancelled; a job superseded by a
    newer one on the document (same `feature`), or stopped by its close, raises ServerCancelled.
    """
    loop = asyncio.get_running_loop()
    token = await begin_progress(ls, title, "", cancellable=True)
    progress_cancel = ls.work_done_progress.tokens.get(token) if token else None

    def report(produced: str, count: int) -> None:
        if token is not None:
            tail = produced[-60:].replace("\n", "↵")
            ls.work_done_progress.report(token, types.WorkDoneProgressReport(
                message=f"{count} tokens: …{tail}", percentage=min(100, 100 * count // max(1, total))))

    def report_threadsafe(produced: str, count: int) -> None:
        loop.call_soon_threadsafe(report, produced, count)

    def progress_cancelled() -> bool:
        return progress_cancel is not None and progress_cancel.cancelled()

    request_future = ls._current_request_future()
    try:
        value = await ls.run_model(lambda engine, should_stop: work(engine, should_stop, report_threadsafe),
                                   key=(uri, feature), priority=PRIORITY_COMMAND, stop_when=progress_cancelled)
    except JobCancelled as exc:
        logger.info("%s: cancelled, nothing inserted", feature)
        if progress_cancelled():
            return "cancelled", None
        if request_future is not None and request_future.cancelled():
            raise JsonRpcRequestCancelled(f"{command} cancelled; nothing inserted") from exc
        # The client did not cancel: a newer job of this kind on this document, or its close, did.
        raise JsonRpcServerCancelled(f"superseded by a newer {command} on this document, or the document "
                                     "was closed; nothing inserted") from exc
    except ModelUnavailable as exc:
        ls.tell(f"cannot {verb}: {exc}", types.MessageType.Error)
        return "no-model", None
    finally:
        if token is not None:
            ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message="done"))
    return "ok", value


def changed_since(ls: LogitlsServer, uri: str, version: int | None, text: str) -> bool:
    document = ls.workspace.text_documents.get(uri)
    return document is None or document.version != version or without_lone_surrogates(document.source) != text


def tell_changed(ls: LogitlsServer, what: str, doing: str) -> None:
    ls.tell(f"the document changed while {doing}; the {what} was not inserted over your edits",
            types.MessageType.Warning)


async def apply_versioned_edit(ls: LogitlsServer, uri: str, version: int | None, text: str, edit: types.TextEdit,
                               *, label: str, what: str, doing: str) -> str:
    """Apply one edit computed for (`version`, `text`) of the document as ONE workspace edit (one undo).

    Returns "applied", "refused" (the editor said no; the user was told) or "document-changed" (the
    document is no longer what the edit was computed for: nothing is written, the user is told)."""
    if changed_since(ls, uri, version, text):
        tell_changed(ls, what, doing)
        return "document-changed"
    if supports_document_changes(ls):
        workspace_edit = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version), edits=[edit])])
    else:
        workspace_edit = types.WorkspaceEdit(changes={uri: [edit]})
    try:
        response = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=workspace_edit,
                                                                                      label=label))
    except Exception as exc:  # noqa: BLE001 - an editor may answer the edit with an error (eglot's "no")
        response, refusal = None, str(exc) or type(exc).__name__
    else:
        refusal = getattr(response, "failure_reason", None) or "the editor refused it"
    if response and response.applied:
        return "applied"
    ls.tell(f"the {what} was not inserted: {refusal}", types.MessageType.Warning)
    return "refused"
