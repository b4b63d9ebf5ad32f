"""JSON-RPC as the spec has it: every request gets exactly one answer, whatever it holds.

pygls structures each message while `json.loads` parses it (an `object_hook`), before it knows the
message's id; when that fails it logs "Unable to deserialize message" and drops the message, so an
editor that sent a request with params lsprotocol rejects (`"params": null`, a negative or huge
position, a string where a number goes, a hover carrying command arguments) waits forever. Here
the hook keeps the parsed JSON as it is, and `handle_message` looks at the whole message first:

- not an object, no usable `jsonrpc`/`method`/`id`  -> InvalidRequest (with the id when it has
  one that can be echoed, `"id": null` otherwise);
- a request whose params do not fit the method's types -> InvalidParams;
- a request for a method nobody handles, or a notification's method sent with an id -> MethodNotFound;
- a request before `initialize` -> ServerNotInitialized; a second `initialize`, or anything after
  `shutdown` but `exit` -> InvalidRequest (as LSP says);
- a body that is not JSON -> ParseError with `"id": null`. A body that is not UTF-8 but whose
  JSON, read leniently, has a request id is answered ParseError with that id: the sender learns
  which request failed instead of waiting for it;
- a notification that does not fit is dropped, with a warning in the log: there is no one to answer.

Unreadable bodies reach us through the server's `report_server_error` (pygls's read loop hands
parse failures there); `LogitlsServer` passes them to `answer_unreadable`.

The converter is lsprotocol's, made strict about JSON's primitive types: cattrs would otherwise
turn `"3"` or `true` or `1.5` into a line number, and `5` into a URI or into the text of an edit.
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any, Optional, Union

import attrs
from cattrs import transform_error
from cattrs.v import format_exception
from lsprotocol import types
from pygls.exceptions import JsonRpcInternalError
from pygls.protocol import JsonRPCNotification, JsonRPCRequestMessage, LanguageServerProtocol, default_converter
from pygls.protocol.language_server import lsp_method

from .document import DocumentWorkspace

logger = logging.getLogger("logitls")

VERSION = "2.0"
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR, NOT_INITIALIZED = (
    types.ErrorCodes.ParseError, types.ErrorCodes.InvalidRequest, types.ErrorCodes.MethodNotFound,
    types.ErrorCodes.InvalidParams, types.ErrorCodes.InternalError, types.ErrorCodes.ServerNotInitialized)


class _Unanswerable(Exception):
    """No id to answer with."""


class _WrongType(TypeError):
    """A JSON value of the wrong type, said in JSON's words."""


def converter():
    """lsprotocol's converter, refusing values of the wrong JSON type instead of coercing them."""
    conv = default_converter()

    def strict(kind: Any, name: str, accepts: tuple[type, ...], refuses: tuple[type, ...] = ()) -> None:
        def structure(value: Any, _: Any) -> Any:
            if isinstance(value, accepts) and not isinstance(value, refuses):
                return value
            raise _WrongType(f"expected {name}, got {_short(value)}")
        conv.register_structure_hook(kind, structure)

    strict(int, "an integer", (int,), (bool,))
    strict(float, "a number", (int, float), (bool,))
    strict(str, "a string", (str,))
    strict(bool, "a boolean", (bool,))
    # lsprotocol passes these through untouched: a request id in $/cancelRequest, a progress token
    strict(Union[int, str], "an integer or a string", (int, str), (bool,))
    strict(Optional[Union[int, str]], "an integer, a string or null", (int, str, type(None)), (bool,))
    return conv


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _valid_id(msg_id: Any) -> bool:
    return isinstance(msg_id, (int, str)) and not isinstance(msg_id, bool)


def _is_request_type(message_type: type) -> bool:
    return "id" in attrs.fields_dict(message_type)


def _describe(exc: BaseException) -> str:
    """What does not fit, one line (cattrs names fields as Python does: text_document for textDocument)."""
    def explain(error: BaseException, kind: Any) -> str:
        if isinstance(error, _WrongType):
            return str(error)
        plain = format_exception(error, kind)  # cattrs' words; a validator's ValueError says more
        return f"{plain}: {error}" if type(error) is ValueError and str(error) else plain

    try:
        problems = [p.replace(" @ $.", " at ").replace(" @ $", "") for p in transform_error(exc, "$", explain)]
    except Exception:  # noqa: BLE001 - not a cattrs error
        problems = [f"{type(exc).__name__}: {exc}"]
    return "; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")


class LogitlsProtocol(LanguageServerProtocol):
    # -- reading -----------------------------------------------------------------------------

    def structure_message(self, data: dict[str, Any]) -> dict[str, Any]:
        # json.loads calls this for every object, innermost first, with no way to tell the message
        # from an object in its params: keep them all as parsed; handle_message structures the message.
        return data

    def handle_message(self, message: Any) -> None:
        try:
            self._handle_raw(message)
        except _Unanswerable as exc:
            self._reply(None, INVALID_REQUEST, str(exc))
        except Exception:  # noqa: BLE001 - a bug here must not cost the client its answer
            logger.exception("failed to handle a message")
            if isinstance(message, dict) and "method" in message and _valid_id(message.get("id")):
                self._reply(message["id"], INTERNAL_ERROR, "the server failed to handle this message")

    def _handle_raw(self, message: Any) -> None:
        if not isinstance(message, dict):
            batch = " (JSON-RPC batches are not part of LSP)" if isinstance(message, list) else ""
            raise _Unanswerable(f"a message must be a JSON object, not {type(message).__name__}{batch}")
        has_id, msg_id = "id" in message, message.get("id")
        if "method" not in message and has_id and ("result" in message or "error" in message):
            if _valid_id(msg_id):
                self._handle_raw_response(message)
            else:
                logger.warning("a response with the id %s dropped: no request of ours has it", _short(msg_id))
            return
        if has_id and not _valid_id(msg_id):
            raise _Unanswerable(f"an id must be an integer or a string, not {_short(msg_id)}")
        if "method" not in message:
            if has_id:
                return self._reply(msg_id, INVALID_REQUEST, "the message has no method")
            raise _Unanswerable("the message has no method, and is no response either")
        method = message["method"]
        request = has_id

        if message.get("jsonrpc") != VERSION or not isinstance(method, str):
            # Not JSON-RPC 2.0 at all: the spec answers even such a notification, with "id": null.
            text = (f'"jsonrpc" must be "2.0", not {_short(message.get("jsonrpc"))}' if isinstance(method, str)
                    else f"the method must be a string, not {_short(method)}")
            if request:
                return self._reply(msg_id, INVALID_REQUEST, text)
            raise _Unanswerable(text)

        def refuse(code: int, text: str) -> None:
            if request:
                self._reply(msg_id, code, f"{method}: {text}")
            else:
                logger.warning("notification %s dropped: %s", _short(method), text)

        if self._shutdown and method != types.EXIT:
            return refuse(INVALID_REQUEST, "the server is shutting down")
        if self._workspace is None and method not in (types.INITIALIZE, types.EXIT):
            return refuse(NOT_INITIALIZED, "the server is not initialized yet")
        if self._workspace is not None and method == types.INITIALIZE and request:
            return refuse(INVALID_REQUEST, "the server is already initialized")

        if request and method not in self.fm.builtin_features and method not in self.fm.features:
            # before the params: a method we do not serve is MethodNotFound, however its params look
            return refuse(METHOD_NOT_FOUND, "the server has no such method")
        message_type = self.get_message_type(method)
        if message_type is not None and _is_request_type(message_type) != request:
            kind = "a request: send it with an id" if not request else "a notification: send it without an id"
            return refuse(METHOD_NOT_FOUND, f"this method is {kind}")
        params = message.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            return refuse(INVALID_PARAMS, f"params must be an object or an array, not {_short(params)}")
        envelope = {"jsonrpc": VERSION, "method": method, "params": params, **({"id": msg_id} if request else {})}
        try:
            if message_type is None:
                # A method lsprotocol does not know: pygls's generic message, as pygls would build it.
                generic = JsonRPCRequestMessage if request else JsonRPCNotification
                structured = self._converter.structure(envelope, generic)
            else:
                structured = self._converter.structure(envelope, message_type)
        except Exception as exc:  # noqa: BLE001 - cattrs' ClassValidationError, or a validator's ValueError
            return refuse(INVALID_PARAMS, f"the params do not fit: {_describe(exc)}")
        super().handle_message(structured)

    def _handle_raw_response(self, message: dict[str, Any]) -> None:
        """A response to one of our requests: structured with its result type; one that does not fit
        fails the request's future, so whatever awaits it goes on instead of waiting forever."""
        msg_id = message["id"]
        result_type = self._result_types.pop(msg_id, None)
        future = self._request_futures.get(msg_id)
        if future is not None and future.done():
            # Given up before the answer came: `shutdown` cancels every request still waiting (VS
            # Code answers a lens refresh late when a restart follows a settings change).
            self._request_futures.pop(msg_id, None)
            logger.debug("the client's late response to %s dropped: the request was given up", msg_id)
            return
        error = message.get("error")
        try:
            if error is not None:
                self._handle_response(msg_id, None, self._converter.structure(error, types.ResponseError))
                return
            if result_type is None:
                self._handle_response(msg_id, message.get("result"))
                return
            envelope = {"jsonrpc": VERSION, "id": msg_id, "result": message.get("result")}
            self._handle_response(msg_id, self._converter.structure(envelope, result_type).result)
        except Exception as exc:  # noqa: BLE001
            logger.warning("the client's response to %s does not fit: %s", msg_id, _describe(exc))
            self._handle_response(msg_id, None, types.ResponseError(
                code=INVALID_PARAMS, message=f"malformed response: {_describe(exc)}"))

    def _handle_cancel_notification(self, msg_id) -> None:
        if msg_id not in self._request_futures:
            # Answered before the cancel came (LSP: the server ignores it); pygls would warn, and the
            # warning would land in the editor's log as if something were wrong.
            logger.debug("cancel for %s dropped: it is answered already", _short(msg_id))
            return
        super()._handle_cancel_notification(msg_id)

    def answer_unreadable(self, error: BaseException) -> bool:
        """Answer a body pygls's read loop could not parse; False for errors that are not about that."""
        if not isinstance(error, (ValueError, RecursionError)):
            return False
        if isinstance(error, UnicodeDecodeError) and isinstance(error.object, (bytes, bytearray)):
            try:
                message = json.loads(bytes(error.object).decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                message = None
            if isinstance(message, dict) and _valid_id(message.get("id")):
                if "method" in message:
                    self._reply(message["id"], PARSE_ERROR, "the message is not valid UTF-8")
                else:
                    self._handle_response(message["id"], None, types.ResponseError(
                        code=PARSE_ERROR, message="the response was not valid UTF-8"))
                return True
            if isinstance(message, dict) and "id" not in message:
                logger.warning("notification %s dropped: it is not valid UTF-8", _short(message.get("method")))
                return True
        logger.warning("unreadable message: %s", _short(str(error), 200))
        self._reply(None, PARSE_ERROR, f"the message is not JSON: {_short(str(error), 200)}")
        return True

    def refuse_too_large(self, length: int, limit: int, msg_id: Any) -> None:
        """A body over the size limit, not read (framing.py): one answer, and one message for the user."""
        text = (f"the message is {length} bytes, more than the {limit} this server reads "
                f"(logitls serve --max-message-bytes)")
        logger.warning("%s: it was not read", text)
        self._reply(msg_id if _valid_id(msg_id) else None, INVALID_REQUEST, text)
        tell = getattr(self._server, "tell", None)
        if tell is not None:
            tell(f"a message of {length / 2**20:.1f} MB from the editor was not read: the limit is "
                 f"{limit / 2**20:.1f} MB; start the server with a larger --max-message-bytes",
                 types.MessageType.Error)

    def refuse_short_body(self, message: Any, length: int) -> None:
        """A body with more after its JSON: its Content-Length was too large (framing.py reads what
        follows as the next message). Answered ParseError, with the request's id."""
        text = f"the body is shorter than its Content-Length ({length}): the message was not read"
        if isinstance(message, dict) and "method" in message and _valid_id(message.get("id")):
            self._reply(message["id"], PARSE_ERROR, text)
        elif isinstance(message, dict) and "method" in message:
            logger.warning("notification %s dropped: %s", _short(message.get("method")), text)
        else:
            logger.warning("%s", text)
            self._reply(None, PARSE_ERROR, text)

    # -- lifecycle ---------------------------------------------------------------------------

    @lsp_method(types.INITIALIZE)
    def lsp_initialize(self, params: types.InitializeParams):
        result = yield from super().lsp_initialize(params)
        # pygls builds its own Workspace; ours keeps documents as the client edits them (document.py).
        # No document can be open yet: the client waits for this answer before sending one.
        self._workspace = DocumentWorkspace.like(self._workspace)
        return result

    # -- writing -----------------------------------------------------------------------------

    def _reply(self, msg_id: Any, code: int, text: str) -> None:
        logger.debug("answering %s with %s: %s", msg_id, getattr(code, "name", code), text)
        # A dict, not ResponseErrorMessage: lsprotocol leaves out an id of None, and JSON-RPC wants "id": null
        self._send_data({"jsonrpc": VERSION, "id": msg_id, "error": {"code": int(code), "message": text}})

    def _send_data(self, data: Any) -> None:
        """pygls's, but a result that cannot be written as JSON (NaN included, which JSON lacks)
        is answered with InternalError instead of nothing."""
        if not data:
            return
        if self.writer is None:
            logger.error("Unable to send data, no available transport!")
            return
        try:
            body = json.dumps(data, default=self._serialize_message, allow_nan=False)
        except Exception as exc:  # noqa: BLE001 - TypeError, ValueError (NaN), AttributeError from __dict__
            msg_id = getattr(data, "id", None)
            is_response = hasattr(data, "result") or isinstance(data, types.ResponseErrorMessage)
            logger.error("could not write %s as JSON: %s", type(data).__name__, exc)
            if is_response and _valid_id(msg_id):
                self._reply(msg_id, INTERNAL_ERROR, f"the result could not be written as JSON: {exc}")
            return
        payload = body.encode(self.CHARSET)
        if self._include_headers:
            header = f"Content-Length: {len(payload)}\r\nContent-Type: {self.CONTENT_TYPE}; charset={self.CHARSET}\r\n\r\n"
            payload = header.encode("ascii") + payload
        try:
            written = self.writer.write(payload)
            if inspect.isawaitable(written):
                import asyncio

                asyncio.ensure_future(written)
        except BrokenPipeError:
            logger.exception("Error sending data. BrokenPipeError")
            raise
        except Exception as error:  # noqa: BLE001
            logger.exception("Error sending data")
            self._server._report_server_error(error, JsonRpcInternalError)
