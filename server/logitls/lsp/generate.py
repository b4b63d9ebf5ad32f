"""The `logitls.generate` command: insert the greedy continuation at a position.

Arguments: `[{"textDocument": {"uri": URI}, "position": {"line": L, "character": C}, "maxNewTokens": N}]`
(`maxNewTokens` optional). Progress reports the text as it grows; cancelling the progress or the
request stops generation and inserts nothing. `generate.timeoutSeconds` caps the time: what was
produced by then is inserted. The edit names the document version it was computed for, and is
dropped (with a message) if the user changed the document meanwhile: a stale edit never lands on
text the user typed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled

from .inline import continuation
from .lifecycle import begin_progress
from .server import JobCancelled, LogitlsServer, ModelUnavailable, logger
from .worker import PRIORITY_COMMAND

COMMAND = "logitls.generate"
USAGE = ('expected one argument {"textDocument": {"uri": URI}, "position": {"line": L, "character": C}, '
         '"maxNewTokens": N (optional)}')


class JsonRpcServerCancelled(JsonRpcException):
    """LSP 3.17's ServerCancelled: the server, not the client, gave up on the request."""

    CODE = -32802
    MESSAGE = "Server Cancelled"


@dataclass
class GenerateRequest:
    uri: str
    position: types.Position
    max_new_tokens: int | None


def _field(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if not isinstance(obj, dict) and hasattr(obj, name):
            return getattr(obj, name)
    return None


def parse_arguments(args: tuple[Any, ...]) -> GenerateRequest:
    if len(args) != 1:
        raise JsonRpcInvalidParams(f"{COMMAND}: {USAGE}; got {len(args)} arguments")
    arg = args[0]
    uri = _field(_field(arg, "textDocument", "text_document"), "uri")
    position = _field(arg, "position")
    line, character = _field(position, "line"), _field(position, "character")
    if not isinstance(uri, str) or not uri:
        raise JsonRpcInvalidParams(f"{COMMAND}: textDocument.uri is missing; {USAGE}")
    # lsprotocol's range for a Position: outside it, building one raises, and the client would get InternalError
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2 ** 31 - 1 for v in (line, character)):
        raise JsonRpcInvalidParams(f"{COMMAND}: position.line and position.character must be integers "
                                   f"from 0 to 2^31-1; {USAGE}")
    max_new = _field(arg, "maxNewTokens", "max_new_tokens")
    if max_new is not None and (not isinstance(max_new, int) or isinstance(max_new, bool) or not 1 <= max_new <= 4096):
        raise JsonRpcInvalidParams(f"{COMMAND}: maxNewTokens must be an integer from 1 to 4096, got {max_new!r}")
    return GenerateRequest(uri, types.Position(line=line, character=character), max_new)


def _supports_document_changes(server: LogitlsServer) -> bool:
    caps = server.client_capabilities
    return bool(caps.workspace and caps.workspace.workspace_edit and caps.workspace.workspace_edit.document_changes)


def register(server: LogitlsServer) -> None:
    @server.command(COMMAND)
    async def generate(ls: LogitlsServer, *args: Any) -> dict[str, Any]:
        request = parse_arguments(args)
        text, version = ls.snapshot(request.uri)
        _, offset = ls.offset_at(text, request.position)
        prefix = text[:offset]
        settings = ls.settings.generate
        max_new = request.max_new_tokens or settings.max_new_tokens
        heal = ls.settings.completion.token_healing
        loop = asyncio.get_running_loop()

        token = await begin_progress(ls, "logitls: generating", "", cancellable=True)
        progress_cancel = ls.work_done_progress.tokens.get(token) if token else None

        def report(produced: str, count: int) -> None:
            if token is not None:
                tail = produced[-60:].replace("\n", "↵")
                ls.work_done_progress.report(token, types.WorkDoneProgressReport(
                    message=f"{count} tokens: …{tail}", percentage=min(100, 100 * count // max_new)))

        def progress_cancelled() -> bool:
            return progress_cancel is not None and progress_cancel.cancelled()

        def run(engine, should_stop) -> tuple[str, str]:
            deadline = time.monotonic() + settings.timeout_seconds
            pieces: list[str] = []
            reason = "length"
            last_report = 0.0
            steps = continuation(engine, prefix, heal, max_new_tokens=max_new, document=request.uri,
                                 should_stop=should_stop)
            for count, step in enumerate(steps, start=1):
                pieces.append(step.text)
                if step.token.id in engine.eos_ids:
                    reason = "eos"
                now = time.monotonic()
                if now - last_report > 0.1:
                    last_report = now
                    loop.call_soon_threadsafe(report, "".join(pieces), count)
                if now > deadline:
                    reason = "timeout"
                    break
            return "".join(pieces), reason

        result: dict[str, Any] = {"text": "", "applied": False, "stop": "cancelled"}
        request_future = ls._current_request_future()
        try:
            produced, reason = await ls.run_model(run, key=(request.uri, "generate"), priority=PRIORITY_COMMAND,
                                                  stop_when=progress_cancelled)
        except JobCancelled as exc:
            logger.info("generate: cancelled, nothing inserted")
            if progress_cancelled():
                return result
            if request_future is not None and request_future.cancelled():
                raise JsonRpcRequestCancelled("generation cancelled; nothing inserted") from exc
            # The client did not cancel: a newer generate on this document, or its close, did.
            raise JsonRpcServerCancelled("superseded by a newer logitls.generate on this document, or the document "
                                         "was closed; nothing inserted") from exc
        except ModelUnavailable as exc:
            ls.tell(f"cannot generate: {exc}", types.MessageType.Error)
            result["stop"] = "no-model"
            return result
        finally:
            if token is not None:
                ls.work_done_progress.end(token, types.WorkDoneProgressEnd(message="done"))

        result.update(text=produced, stop=reason)
        if reason == "timeout":
            ls.tell(f"generation stopped after {settings.timeout_seconds:g} s (generate.timeoutSeconds)")
        document = ls.workspace.text_documents.get(request.uri)
        if document is None or document.version != version or document.source != text:
            ls.tell("the document changed while generating; the continuation was not inserted over your edits",
                    types.MessageType.Warning)
            result["stop"] = "document-changed"
            return result
        if not produced:
            return result
        edit = types.TextEdit(range=types.Range(start=request.position, end=request.position), new_text=produced)
        if _supports_document_changes(ls):
            workspace_edit = types.WorkspaceEdit(document_changes=[types.TextDocumentEdit(
                text_document=types.OptionalVersionedTextDocumentIdentifier(uri=request.uri, version=version),
                edits=[edit])])
        else:
            workspace_edit = types.WorkspaceEdit(changes={request.uri: [edit]})
        try:
            response = await ls.workspace_apply_edit_async(
                types.ApplyWorkspaceEditParams(edit=workspace_edit, label="logitls: greedy continuation"))
        except Exception as exc:  # noqa: BLE001 - an editor may answer the edit with an error (eglot's "no")
            response, refusal = None, str(exc) or type(exc).__name__
        else:
            refusal = getattr(response, "failure_reason", None) or "the editor refused it"
        result["applied"] = bool(response and response.applied)
        if not result["applied"]:
            ls.tell(f"the continuation was not inserted: {refusal}", types.MessageType.Warning)
        return result
