"""Hooks for the test suite, registered only when the environment says `LOGITLS_TEST_HOOKS=1`.

`logitls/test/hold {"atCheck": n, "keyContains": text}` arms the model thread's hold
(logitls.test_support.CheckpointHold): the next model job whose key contains the text stops at its
n-th stop check, and the server says so with `logitls/test/held {"key", "check"}`. `logitls/test/release` lets it go on. A test can then act while a job is provably
mid-computation, whatever the CPU's speed. `LOGITLS_TEST_HOLD_AT_START=keyContains:n` arms the
hold before the first job (the model load).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from .arguments import field

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")

HOLD, RELEASE, HELD = "logitls/test/hold", "logitls/test/release", "logitls/test/held"


def enabled() -> bool:
    return os.environ.get("LOGITLS_TEST_HOOKS") == "1"


def _announce(ls: LogitlsServer):
    def held(key, check: int, loop: asyncio.AbstractEventLoop) -> None:
        logger.debug("test hook: held %r at check %d", key, check)
        loop.call_soon_threadsafe(ls.protocol.notify, HELD, {"key": repr(key), "check": check})

    return held


def register(server: LogitlsServer) -> None:
    if not enabled():
        return
    server.worker.hold.on_held = _announce(server)
    at_start = os.environ.get("LOGITLS_TEST_HOLD_AT_START")  # "keyContains:check", armed before any job
    if at_start:
        key_contains, _, check = at_start.rpartition(":")
        server.worker.hold.arm(int(check), key_contains)

    @server.feature(HOLD)
    def hold(ls: LogitlsServer, params) -> None:
        ls.worker.hold.arm(int(field(params, "atCheck") or 0), str(field(params, "keyContains") or ""))

    @server.feature(RELEASE)
    def release(ls: LogitlsServer, params) -> None:
        ls.worker.hold.release()
