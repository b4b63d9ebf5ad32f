"""Hooks for the test suite, registered only when the environment says `LOGITLS_TEST_HOOKS=1`.

`logitls/test/hold {"atCheck": n, "keyContains": text}` arms the model thread's hold
(worker.CheckpointHold): the next model job whose key contains the text stops at its n-th stop check, and the server says so with `logitls/test/held {"key",
"check"}`. `logitls/test/release` lets it go on. A test can then act while a job is provably
mid-computation, whatever the CPU's speed.
"""

from __future__ import annotations

import asyncio
import os

from .server import LogitlsServer, logger

HOLD, RELEASE, HELD = "logitls/test/hold", "logitls/test/release", "logitls/test/held"


def enabled() -> bool:
    return os.environ.get("LOGITLS_TEST_HOOKS") == "1"


def register(server: LogitlsServer) -> None:
    if not enabled():
        return

    @server.feature(HOLD)
    def hold(ls: LogitlsServer, params) -> None:
        loop = asyncio.get_running_loop()
        def field(name, default):
            return params.get(name, default) if isinstance(params, dict) else getattr(params, name, default)

        def held(key, check: int) -> None:
            logger.debug("test hook: held %r at check %d", key, check)
            loop.call_soon_threadsafe(ls.protocol.notify, HELD, {"key": repr(key), "check": check})

        logger.debug("test hook: hold %s", params)
        ls.worker.hold.on_held = held
        ls.worker.hold.arm(int(field("atCheck", 0)), str(field("keyContains", "")))

    @server.feature(RELEASE)
    def release(ls: LogitlsServer, params) -> None:
        ls.worker.hold.release()
