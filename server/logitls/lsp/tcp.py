"""`logitls serve --tcp`: one client per process, and only an LSP client gets through.

pygls's own `start_tcp` gives every new connection the one protocol's writer (a second connection
takes over the first one's replies), stops the server when any connection ends, and reads whatever
arrives: its reader skips every line that is not `Content-Length: N`, so an HTTP request is read as
an LSP message. A web page can POST to a loopback port without any preflight (a "simple" request:
`Content-Type: text/plain`), so any page open in the browser could have sent `initialize` with
settings of its choosing. Here:

- one client at a time: a connection that arrives while a client is attached is closed at once,
  with a line on stderr;
- the first message must be LSP: header lines `Content-Length:` / `Content-Type:` only (an HTTP
  request starts with a request line such as `POST / HTTP/1.1`, which is not one), then a JSON-RPC
  `initialize` request, within `FIRST_MESSAGE_SECONDS`; anything else is closed, with a line on
  stderr, and leaves the place free for the editor;
- with a token (`--token-file`, `LOGITLS_TOKEN`), that `initialize` must carry it as
  `initializationOptions.token` (or `initializationOptions.logitls.token`); it is taken out before
  the settings are read. Without one, any local user who connects before the editor gets the server;
- when the client disconnects or sends `exit`, the server exits, as over stdio: a server holds one
  editor's documents and settings, so an editor that reconnects starts a new one.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import sys
import threading
from typing import Any

logger = logging.getLogger("logitls")

FIRST_MESSAGE_SECONDS = 10.0
MAX_FIRST_MESSAGE = 1 << 20  # an initialize request is a few KB
HEADER = re.compile(rb"(content-length|content-type)[ \t]*:[ \t]*([^\r\n]*)\r\n", re.IGNORECASE)
HTTP_REQUEST_LINE = re.compile(rb"[A-Z]+ \S+ HTTP/\d")


class Refused(Exception):
    """A connection that is not an LSP client's (or not the one with the token): why, for stderr."""


def say(message: str) -> None:
    print(f"logitls: {message}", file=sys.stderr, flush=True)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _take_token(message: dict[str, Any]) -> Any:
    """Remove the token from initializationOptions (top level or under `logitls`); return it (None: none)."""
    params = message.get("params")
    options = params.get("initializationOptions") if isinstance(params, dict) else None
    if not isinstance(options, dict):
        return None
    found = options.pop("token", None)
    inner = options.get("logitls")
    if isinstance(inner, dict) and "token" in inner:
        inner_token = inner.pop("token")
        found = inner_token if found is None else found
    return found


async def read_first_message(reader: Any, token: str | None) -> bytes:
    """Read and check the first message; return it as the LSP loop should read it (token removed)."""
    length = None
    headers = 0
    while True:
        line = await reader.readline()
        if not line:
            raise Refused("it closed before sending a message" if not headers else "it closed mid-header")
        if line == b"\r\n" and headers:
            break
        match = HEADER.fullmatch(line)
        if match is None:
            shown = line[:60].decode("latin-1").rstrip("\r\n")
            kind = "an HTTP request" if HTTP_REQUEST_LINE.match(line) else "not an LSP header"
            raise Refused(f"it began with {shown!r}: {kind}")
        headers += 1
        if match.group(1).lower() == b"content-length":
            value = match.group(2).strip()
            if not value.isdigit() or not 0 < int(value) <= MAX_FIRST_MESSAGE:
                raise Refused(f"its Content-Length is {value[:20].decode('latin-1')!r}")
            length = int(value)
    if length is None:
        raise Refused("its first message has no Content-Length")
    body = await reader.readexactly(length)
    try:
        message = json.loads(body)
    except ValueError:
        raise Refused("its first message is not JSON") from None
    if not isinstance(message, dict) or message.get("method") != "initialize" or "id" not in message:
        raise Refused("its first message is not an `initialize` request")
    given = _take_token(message)
    if token is not None and not (isinstance(given, str) and hmac.compare_digest(given.encode(), token.encode())):
        raise Refused("its initialize did not carry the token (initializationOptions.token)"
                      if given is None else "its initialize carried a wrong token")
    if given is not None:
        body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class _Replay:
    """What the message loop reads: the checked first message once more, then the connection itself."""

    def __init__(self, first: bytes, reader: asyncio.StreamReader) -> None:
        self._buffer = first
        self._reader = reader

    async def read(self, n: int) -> bytes:
        if self._buffer:
            part, self._buffer = self._buffer[:n], self._buffer[n:]
            return part
        return await self._reader.read(n)


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)


def serve_tcp(server: Any, host: str, port: int, *, token: str | None = None) -> None:
    """Serve `server` (a pygls LanguageServer) to one client on host:port; return when it is gone."""
    from .framing import MessageReader, run_messages

    stop_event = threading.Event()
    server._stop_event = stop_event  # what pygls's own start_* set: shutdown() and `exit` use it
    attached: list[str] = []

    def refuse(writer: asyncio.StreamWriter, peer: str, why: str) -> None:
        say(f"refused a connection from {peer}: {why}")
        writer.close()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, finished: asyncio.Event) -> None:
        peer = _peer(writer)
        busy = ("the client {} is attached (one client per server; start another `logitls serve --tcp` "
                "for another editor)")
        if attached:
            return refuse(writer, peer, busy.format(attached[0]))
        try:
            first = await asyncio.wait_for(read_first_message(reader, token), FIRST_MESSAGE_SECONDS)
        except Refused as exc:
            return refuse(writer, peer, str(exc))
        except asyncio.TimeoutError:
            return refuse(writer, peer, f"no LSP message within {FIRST_MESSAGE_SECONDS:g} s")
        except (asyncio.IncompleteReadError, ValueError, ConnectionError) as exc:  # ValueError: a line over 64 KB
            return refuse(writer, peer, f"{type(exc).__name__} while reading its first message")
        if attached:  # another connection got through while this one was being read
            return refuse(writer, peer, busy.format(attached[0]))
        attached.append(peer)
        say(f"client {peer} attached")
        server.protocol.set_writer(writer)
        try:
            await run_messages(MessageReader(_Replay(first, reader).read, server.max_message_bytes), server)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        say(f"client {peer} disconnected: the server exits")
        writer.close()
        finished.set()

    async def main() -> None:
        finished = asyncio.Event()
        listening = await asyncio.start_server(lambda r, w: connection(r, w, finished), host, port)
        server._server = listening
        bound = listening.sockets[0].getsockname()
        say(f"listening on {host}:{bound[1]}" + ("" if token is None else " (a token is required)"))
        async with listening:
            await finished.wait()

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        pass  # `exit` ends the process from inside the loop (pygls calls sys.exit), as over stdio
    finally:
        server.shutdown()
