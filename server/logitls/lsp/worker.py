"""The model worker: one dedicated thread that owns the engine, fed by a priority queue.

Handlers on the event loop `await worker.submit(...)`; the loop never blocks on the model. A job
carries a stop check that the engine polls between prefill chunks and decode steps, so work that
nobody waits for any more stops within one forward pass:
- a newer job with the same key (same document and feature) supersedes the older one;
- a cancelled request (`$/cancelRequest`, or the awaiting task cancelled) stops its job.
Lower numbers run first: a keystroke's completion never waits behind a background pass.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from ..test_support import CheckpointHold

logger = logging.getLogger("logitls.worker")

PRIORITY_INTERACTIVE = 0  # completion, hover, inline completion
PRIORITY_COMMAND = 1  # generate
PRIORITY_BACKGROUND = 2  # whole-document passes


class JobCancelled(Exception):
    """The job was superseded or cancelled before it finished."""


class ModelUnavailable(Exception):
    """No model to answer with (it failed to load, or did not load in time)."""


@dataclass(order=True)
class _Job:
    priority: int
    sequence: int
    fn: Callable[[Callable[[], bool]], Any] = field(compare=False)
    key: Hashable | None = field(compare=False)
    future: asyncio.Future = field(compare=False)
    loop: asyncio.AbstractEventLoop = field(compare=False)
    cancelled: threading.Event = field(compare=False, default_factory=threading.Event)
    stop_when: Callable[[], bool] | None = field(compare=False, default=None)

    def should_stop(self) -> bool:
        return self.cancelled.is_set() or (self.stop_when is not None and self.stop_when())


class ModelWorker:
    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._sequence = itertools.count()
        self._latest: dict[Hashable, _Job] = {}
        self._lock = threading.Lock()
        self.hold = CheckpointHold()
        # A daemon thread: losing the client must end the process even mid-forward-pass.
        self._thread = threading.Thread(target=self._run, name="logitls-model", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job.future.done():
                continue
            checkpoint = self.hold.for_job(job.key, job.loop)
            checkpoint()
            if job.should_stop():  # superseded, cancelled, or its document closed while it waited
                self._settle(job, exception=JobCancelled("superseded"))
                continue
            started = time.monotonic()

            def should_stop(job: _Job = job) -> bool:
                checkpoint()
                return job.should_stop()

            try:
                result = job.fn(should_stop)
            except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting handler
                # Whatever a stopped job raised (the engine's own Cancelled), callers see one type.
                if job.should_stop():
                    logger.debug("model job %s stopped before it finished", job.key)
                    self._settle(job, exception=JobCancelled("stopped"))
                else:
                    self._settle(job, exception=exc)
            else:
                self._settle(job, result=result)
            finally:
                logger.debug("model job %s: %.1f ms", job.key, (time.monotonic() - started) * 1000)
                with self._lock:
                    if job.key is not None and self._latest.get(job.key) is job:
                        del self._latest[job.key]

    def _settle(self, job: _Job, *, result: Any = None, exception: BaseException | None = None) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if exception is not None:
                job.future.set_exception(exception)
            else:
                job.future.set_result(result)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:
            pass  # the event loop is gone: the server is shutting down

    def enqueue(
        self,
        fn: Callable[[Callable[[], bool]], Any],
        *,
        key: Hashable | None = None,
        priority: int = PRIORITY_INTERACTIVE,
        stop_when: Callable[[], bool] | None = None,
    ) -> asyncio.Future:
        """Queue fn(should_stop) for the model thread now; the future holds its result.

        A job with the key of a queued or running one supersedes it.
        """
        loop = asyncio.get_running_loop()
        job = _Job(priority, next(self._sequence), fn, key, loop.create_future(), loop, stop_when=stop_when)
        if key is not None:
            with self._lock:
                older = self._latest.get(key)
                self._latest[key] = job
            if older is not None:
                older.cancelled.set()
                if not older.future.done():
                    older.future.set_exception(JobCancelled("superseded by a newer request"))
        self._queue.put(job)
        job.future.add_done_callback(lambda future: future.cancelled() and job.cancelled.set())
        return job.future

    async def submit(
        self,
        fn: Callable[[Callable[[], bool]], Any],
        *,
        key: Hashable | None = None,
        priority: int = PRIORITY_INTERACTIVE,
        stop_when: Callable[[], bool] | None = None,
    ) -> Any:
        """Run fn(should_stop) on the model thread and return its result.

        Cancelling the awaiting task stops the job.
        """
        return await self.enqueue(fn, key=key, priority=priority, stop_when=stop_when)

    def queued(self) -> int:
        with self._queue.mutex:
            return sum(not job.future.done() for job in self._queue.queue)

    def interactive_waiting(self) -> bool:
        """True while a job more urgent than background work waits: background jobs yield to it."""
        with self._queue.mutex:
            return any(job.priority < PRIORITY_BACKGROUND and not job.future.done() for job in self._queue.queue)

