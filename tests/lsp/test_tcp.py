"""`logitls serve --tcp`: one client per process, nothing but an LSP client gets through (an HTTP
request from a browser page is closed), an optional token, and the server exits with its client."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time

import pytest

from conftest import SERVER_COMMAND

NO_MODEL = {"model": "/no/such/model"}  # loads nothing (fails at once): these tests are about the socket


def frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return f"Content-Length: {len(body)}\r\n\r\n".encode() + body


def initialize(options: dict | None = None, msg_id: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": msg_id, "method": "initialize",
            "params": {"capabilities": {}, "initializationOptions": options if options is not None else NO_MODEL}}


class TcpServer:
    """`logitls serve --tcp --port 0` with its stderr collected line by line."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.process = subprocess.Popen([*SERVER_COMMAND, "--tcp", "--port", "0", *args], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True,
                                        env=dict(os.environ, HF_HUB_OFFLINE="1", **(env or {})))
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        listening = self.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
        self.port = int(listening.group(1))

    def _drain(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = re.search(pattern, line)
                if match:
                    return match
            if self.process.poll() is not None and not any(re.search(pattern, ln) for ln in self.lines):
                time.sleep(0.2)  # let the drain thread catch up once
                if not any(re.search(pattern, ln) for ln in self.lines):
                    break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} on stderr: {self.lines}")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=15)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def answer(connection: socket.socket, msg_id: int) -> dict:
    """Read frames until the response with this id (notifications and server requests skipped)."""
    data = b""
    while True:
        while True:
            head, sep, rest = data.partition(b"\r\n\r\n")
            length = re.search(rb"Content-Length: (\d+)", head) if sep else None
            if length and len(rest) >= int(length.group(1)):
                body, data = rest[: int(length.group(1))], rest[int(length.group(1)):]
                message = json.loads(body)
                if message.get("id") == msg_id and "method" not in message:
                    return message
                continue
            break
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk


def closed_without_answer(connection: socket.socket) -> bool:
    """True when the server closes the connection without sending a byte."""
    try:
        return connection.recv(65536) == b""
    except ConnectionResetError:
        return True


HTTP_POST = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
             + b"Content-Length: %d\r\n\r\n" % len(json.dumps(initialize())) + json.dumps(initialize()).encode())


def test_one_client_http_is_turned_away_and_the_server_exits_with_its_client():
    server = TcpServer()
    try:
        # a browser page's POST (a "simple" request, no preflight) before any editor: closed, nothing answered
        with server.connect() as page:
            page.sendall(HTTP_POST)
            assert closed_without_answer(page)
        server.wait_for(r"refused a connection from 127\.0\.0\.1:\d+: it began with 'POST / HTTP/1\.1': an HTTP request")
        # the editor still gets in
        editor = server.connect()
        editor.sendall(frame(initialize()))
        assert "capabilities" in answer(editor, 1)["result"]
        server.wait_for(r"client 127\.0\.0\.1:\d+ attached")
        # a second connection while it is attached: closed at once, the first one's replies stay its own
        with server.connect() as second:
            assert closed_without_answer(second)
        server.wait_for(r"refused a connection from .*: the client 127\.0\.0\.1:\d+ is attached")
        with server.connect() as page:
            page.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert closed_without_answer(page)
        editor.sendall(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        editor.sendall(frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
        assert answer(editor, 2)["result"] is None  # the first client works on
        # the client goes away (no `exit`): so does the server
        editor.close()
        assert server.process.wait(timeout=300) is not None
        server.wait_for(r"client 127\.0\.0\.1:\d+ disconnected")
    finally:
        server.stop()


def test_a_token_is_required_when_set_and_never_reaches_the_settings(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(0o600)
    server = TcpServer("--token-file", str(token_file))
    try:
        server.wait_for(r"a token is required")
        for options, why in (({**NO_MODEL}, "did not carry the token"),
                             ({**NO_MODEL, "token": "guess"}, "wrong token")):
            with server.connect() as intruder:
                intruder.sendall(frame(initialize(options)))
                assert closed_without_answer(intruder)
            server.wait_for(why)
        with server.connect() as intruder:  # not initialize first
            intruder.sendall(frame({"jsonrpc": "2.0", "id": 1, "method": "shutdown"}))
            assert closed_without_answer(intruder)
        server.wait_for(r"not an `initialize` request")
        editor = server.connect()
        editor.sendall(frame(initialize({"token": "s3cret-token", "logitls": NO_MODEL, "topN": 3})))
        assert "capabilities" in answer(editor, 1)["result"]
        editor.sendall(frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
        answer(editor, 2)
        editor.sendall(frame({"jsonrpc": "2.0", "method": "exit"}))
        assert server.process.wait(timeout=300) == 0
        assert not [line for line in server.lines if "token" in line and "unknown setting" in line]
        assert not [line for line in server.lines if "s3cret" in line]
    finally:
        server.stop()


def test_after_the_first_message_headers_are_read_in_any_case_and_spacing():
    """The first-message check took `content-length:`; the loop after it lost it and everything after."""
    server = TcpServer()
    try:
        editor = server.connect()
        message = json.dumps(initialize()).encode()
        editor.sendall(b"content-length: %d\r\n\r\n" % len(message) + message)
        assert "capabilities" in answer(editor, 1)["result"]
        for msg_id, header in ((2, b"content-length: %d\r\n\r\n"), (3, b"Content-Length:%d\r\n\r\n")):
            body = json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": "logitls/no-such-method"}).encode()
            editor.sendall(header % len(body) + body)
            assert answer(editor, msg_id)["error"]["code"] == -32601
        editor.close()
    finally:
        server.stop()


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX's")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_a_token_file_other_users_can_read_is_refused(tmp_path, mode):
    """As ssh refuses a private key others can read: whoever reads the token drives the server."""
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    token_file.chmod(mode)
    done = subprocess.run([*SERVER_COMMAND, "--tcp", "--port", "0", "--token-file", str(token_file)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert f"permissions {mode:04o}" in done.stderr and f"chmod 600 {token_file}" in done.stderr
    assert "s3cret" not in done.stderr


def test_binding_beyond_this_machine_needs_a_token():
    done = subprocess.run([*SERVER_COMMAND, "--tcp", "--host", "0.0.0.0", "--port", "0"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 2
    assert "--token-file" in done.stderr and "0.0.0.0" in done.stderr


@pytest.mark.parametrize("first, reason", [
    (b"OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n", "an HTTP request"),
    (b"Content-Length: 5\r\nX-Other: 1\r\n\r\nhello", "not an LSP header"),
    (b"Content-Length: 5\r\n\r\nhello", "not JSON"),
    (b"Content-Length: 99999999\r\n\r\n", "Content-Length is '99999999'"),
])
def test_the_first_message_check(first, reason):
    import asyncio

    from logitls.lsp.tcp import Refused, read_first_message

    async def check(data: bytes):
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_first_message(reader, None)

    with pytest.raises(Refused, match=re.escape(reason)):
        asyncio.run(check(first))
    # an editor's initialize comes through byte for byte (headers in either case, Content-Type too)
    message = json.dumps(initialize()).encode()
    sent = b"content-length: %d\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n" % len(message)
    assert asyncio.run(check(sent + message)) == b"Content-Length: %d\r\n\r\n" % len(message) + message
