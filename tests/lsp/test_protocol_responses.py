"""Responses from the client to the server's own requests (refreshes, configuration, applyEdit), and
the client's late cancels of requests already answered."""

from __future__ import annotations

import asyncio
import logging


def test_a_late_answer_to_a_request_given_up_at_shutdown_is_dropped_quietly(caplog):
    """`shutdown` cancels the server's requests still waiting (pygls); the client may answer one of
    them afterwards (VS Code does, for a lens refresh, when a restart follows a settings change).
    That answer is expected: no warning in the editor's log, and the request is forgotten."""
    from logitls.lsp.features import create_server

    protocol = create_server().protocol
    loop = asyncio.new_event_loop()
    try:
        given_up = loop.create_future()
        given_up.cancel()
        protocol._request_futures["refresh-1"] = given_up
        waiting = loop.create_future()
        protocol._request_futures["refresh-2"] = waiting
        with caplog.at_level(logging.DEBUG):
            protocol._handle_raw_response({"jsonrpc": "2.0", "id": "refresh-1", "result": None})
            protocol._handle_raw_response({"jsonrpc": "2.0", "id": "refresh-2", "result": None})
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert "refresh-1" not in protocol._request_futures and "refresh-2" not in protocol._request_futures
        assert waiting.done() and waiting.result() is None  # an answer still awaited is delivered as before
    finally:
        loop.close()


def test_a_cancel_for_a_request_already_answered_is_dropped_quietly(caplog):
    """The client may cancel a request whose answer is on its way (VS Code does, for a completion or
    a code action, when the cursor moves): LSP says the server ignores it. pygls warned about an
    unknown message id, and the warning landed in the editor's log."""
    from logitls.lsp.features import create_server

    protocol = create_server().protocol
    loop = asyncio.new_event_loop()
    try:
        running = loop.create_future()
        protocol._request_futures[7] = running
        with caplog.at_level(logging.DEBUG):
            protocol._handle_cancel_notification(6)  # answered already
            protocol._handle_cancel_notification(7)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        assert running.cancelled()  # a request still running is cancelled as before
    finally:
        loop.close()
