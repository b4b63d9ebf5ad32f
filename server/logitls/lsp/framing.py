"""LSP's base protocol read robustly: header lines, a blank line, a body of Content-Length bytes.

pygls's read loop knows one header spelling (`Content-Length: N` exactly: no lowercase name, no
other spacing), reads any Content-Length into memory (`1000000000000` ends the process with
MemoryError), and after a body whose length is wrong it never finds a header again: every later
message is lost. Here:

- header names are case-insensitive and the colon may have blanks around it (RFC 7230's fields,
  which LSP's headers follow); lines may end in LF alone; unknown headers are ignored;
- a body over `max_bytes` (`logitls serve --max-message-bytes`) is not read: it is answered with an
  error (with the request's id where it leads the body, as editors write it) and skipped;
- after a bad body the reader resynchronises on the next `Content-Length` header, wherever it
  starts: a body shorter than its Content-Length gives back the bytes after its JSON, a longer one
  leaves bytes before the next header, which are skipped (with one line in the log).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Awaitable, Callable

logger = logging.getLogger("logitls")

DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # a 50 MB document, escaped as JSON, with room to spare
CHUNK = 1 << 16
MAX_LINE = 1 << 16  # header lines are short; a longer "line" is a body's bytes being skipped
HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]*:[ \t]*(.*?)[ \t]*")
# A header at the end of a line that began with something else: the tail of a body read short
CONTENT_LENGTH_AT_END = re.compile(rb"content-length[ \t]*:[ \t]*([0-9]+)[ \t]*$", re.IGNORECASE)
# The id of a request whose body is not read: where editors put it, first (or after "jsonrpc")
LEADING_ID = re.compile(rb'\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?[0-9]{1,18}|"(?:[^"\\]|\\.){0,200}")')


class TooLarge:
    """A message whose body was not read: its length, and the request id it leads with (or None)."""

    def __init__(self, length: int, msg_id: Any) -> None:
        self.length, self.msg_id = length, msg_id


class MessageReader:
    """Bodies from a byte stream; `read(n)` returns up to n bytes, b"" at its end."""

    def __init__(self, read: Callable[[int], Awaitable[bytes]], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._read = read
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._skipped = 0  # bytes skipped since the last good header, reported once a header is found
        self._quiet_skip = False  # skipping a body refused for its size: said already

    def unread(self, data: bytes) -> None:
        """Give bytes back: they are read again before the stream's next ones."""
        self._buffer[:0] = data

    async def _fill(self) -> bool:
        chunk = await self._read(CHUNK)
        if not chunk:
            return False
        self._buffer += chunk
        return True

    async def _line(self) -> bytes | None:
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                line = bytes(self._buffer[:end + 1])
                del self._buffer[:end + 1]
                return line
            if len(self._buffer) > MAX_LINE:  # a body's bytes: drop them, keeping where a header could begin
                self._skip(len(self._buffer) - 64)
                del self._buffer[:-64]
            start = len(self._buffer)
            if not await self._fill():
                rest = bytes(self._buffer)
                self._buffer.clear()
                return rest or None

    def _skip(self, count: int) -> None:
        self._skipped += count

    def _found_header(self) -> None:
        if self._skipped and not self._quiet_skip:
            logger.warning("skipped %d bytes that were no message before the next header (a Content-Length "
                           "that did not match its body?)", self._skipped)
        self._skipped, self._quiet_skip = 0, False

    async def next(self) -> bytes | TooLarge | None:
        """The next body, a TooLarge, or None at the end of the stream."""
        length: int | None = None
        headers = False
        while True:
            line = await self._line()
            if line is None:
                return None
            content = line.rstrip(b"\r\n")
            if not content:
                if length is not None:
                    break
                if headers:
                    logger.warning("a message without a Content-Length header: skipped")
                headers = False
                continue
            match = HEADER.fullmatch(content)
            if match is None:
                # not a header: the tail of a body whose Content-Length was wrong, or other noise
                found = CONTENT_LENGTH_AT_END.search(content)
                if found is None:
                    self._skip(len(line))
                    headers, length = False, None
                    continue
                self._skip(found.start())
                name, value = b"content-length", found.group(1)
            else:
                name, value = match.group(1).lower(), match.group(2)
            if name == b"content-length":
                self._found_header()
                if not value.isdigit():
                    logger.warning("a Content-Length that is no number (%r): the message is skipped", value[:20])
                    headers, length = False, None
                    continue
                length = int(value)
            headers = True
        if length > self.max_bytes:
            if not self._buffer:
                await self._fill()
            head = LEADING_ID.match(self._buffer, 0, 512)
            msg_id = json.loads(head.group(1)) if head else None
            # Not read: skipped as noise up to the next header (a sender that lied about the length
            # loses nothing after it, and a true one is not held in memory).
            self._quiet_skip = True
            return TooLarge(length, msg_id)
        while len(self._buffer) < length:
            if not await self._fill():
                return None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body


def split_short_body(error: json.JSONDecodeError) -> tuple[Any, bytes] | None:
    """A body holding one JSON value and then more (its Content-Length was larger than the message):
    (the value, the bytes after it, which start the next message); None if it is not that."""
    if error.msg != "Extra data":
        return None
    try:
        value = json.loads(error.doc[:error.pos])
    except ValueError:
        return None
    return value, error.doc[error.pos:].encode("utf-8", "surrogatepass")


async def run_messages(reader: MessageReader, server: Any) -> None:
    """pygls's read loop (io_.run_async), over a MessageReader."""
    protocol = server.protocol
    stop_event = server._stop_event
    while not stop_event.is_set():
        item = await reader.next()
        if item is None:
            break
        if isinstance(item, TooLarge):
            protocol.refuse_too_large(item.length, reader.max_bytes, item.msg_id)
            continue
        try:
            try:
                message = json.loads(item, object_hook=protocol.structure_message)
            except json.JSONDecodeError as exc:
                split = split_short_body(exc)
                if split is None:
                    raise
                value, rest = split
                reader.unread(rest)
                protocol.refuse_short_body(value, len(item))
                continue
            protocol.handle_message(message)
        except Exception as exc:  # noqa: BLE001 - as pygls: a body that is not JSON is answered there
            logger.debug("unable to handle a message", exc_info=True)
            server.report_server_error(exc, _json_rpc_exception())


def _json_rpc_exception() -> type:
    from pygls.exceptions import JsonRpcException

    return JsonRpcException
