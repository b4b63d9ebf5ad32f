"""Machinery that exists for the test suite, in one place.

`CheckpointHold`: the model thread's hold at a job's n-th stop check, which `lsp/test_hooks.py`
arms over the protocol (only with `LOGITLS_TEST_HOOKS=1`); disarmed, a checkpoint is one attribute
read. (The quantiser that tests and the bench use for random-weight models is bench/quantize.py.)
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Callable, Hashable


class CheckpointHold:
    """Hold the model thread at a job's n-th stop check (`LOGITLS_TEST_HOOKS=1`).

    Tests of cancellation and superseding need a job that is observably mid-computation; a sleep
    that hopes to land during a prefill passes or fails with the CPU's speed. Armed, the hold stops
    the next job (whose key contains a given text) at its n-th check (0: before it starts), reports
    it through `on_held`, and waits for `release()`.
    """

    def __init__(self) -> None:
        self._armed_at: int | None = None
        self._key_contains = ""
        self._released = threading.Event()
        # called on the model thread with the job's key, the check number and the job's event loop
        self.on_held: Callable[[Hashable | None, int, asyncio.AbstractEventLoop], None] = lambda key, n, loop: None

    def arm(self, at_check: int, key_contains: str = "") -> None:
        self._released.clear()
        self._key_contains = key_contains
        self._armed_at = at_check

    def release(self) -> None:
        self._armed_at = None
        self._released.set()

    def for_job(self, key: Hashable | None, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        at = self._armed_at
        if at is None or self._key_contains not in repr(key):
            return _no_checkpoint
        self._armed_at = None  # one job is held per arming
        checks = itertools.count()

        def checkpoint() -> None:
            n = next(checks)
            if n == at:
                self.on_held(key, n, loop)
                self._released.wait()

        return checkpoint


def _no_checkpoint() -> None:
    pass
