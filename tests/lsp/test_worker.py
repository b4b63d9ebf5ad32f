"""The model thread and the waits in front of it, in-process (no model needed)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import pytest

from logitls.lsp.server import LogitlsServer, ModelUnavailable
from logitls.lsp.worker import JobCancelled, ModelWorker


async def test_waiting_for_a_model_that_never_comes_leaves_nothing_behind():
    server = LogitlsServer()
    server.settings = dataclasses.replace(server.settings, model_wait_seconds=0.01)
    before = len(asyncio.all_tasks())
    for _ in range(20):
        with pytest.raises(ModelUnavailable, match="still loading"):
            await server.wait_for_model()
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before  # no waiter per timed-out request


async def _held_job(worker: ModelWorker, key: str, result: str) -> asyncio.Future:
    """A job for `key` that returns `result`, held on the model thread before it starts (until
    worker.hold.release())."""
    worker.hold.arm(0, key)
    gate = threading.Event()
    worker.hold.on_held = lambda key, n, loop: gate.set()
    job = worker.enqueue(lambda stop: result, key=key)
    await asyncio.get_running_loop().run_in_executor(None, gate.wait)
    return job


async def test_a_newer_job_with_the_same_key_supersedes_a_queued_one():
    worker = ModelWorker()
    blocker = await _held_job(worker, "blocker", "blocked")
    older = worker.enqueue(lambda stop: "older", key=("doc", "completion"))
    newer = worker.enqueue(lambda stop: "newer", key=("doc", "completion"))
    worker.hold.release()
    with pytest.raises(JobCancelled):
        await older
    assert await newer == "newer" and await blocker == "blocked"


async def test_a_job_stopped_mid_way_is_reported_as_cancelled():
    worker = ModelWorker()
    stop_now = threading.Event()

    def long_job(should_stop):
        stop_now.set()
        while not should_stop():
            pass
        raise RuntimeError("the engine's own Cancelled")

    job = asyncio.ensure_future(worker.submit(long_job, key="long"))
    await asyncio.get_running_loop().run_in_executor(None, stop_now.wait)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert await worker.submit(lambda stop: 42) == 42  # the thread is free again
