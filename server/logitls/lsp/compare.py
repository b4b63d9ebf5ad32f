"""lens.compareModel: a second model loaded beside the first while the setting is on.

The lens pass then scores every token under both (lsp/lens.py), the hover shows both probabilities,
and `lens.view: compare` colours each token by which model found it likelier. The second model is
loaded on the model thread (a request waits behind it, once), with the first model's dtype and
device, and dropped, memory and caches, when the setting is cleared. A model that tokenizes
differently is refused with one message.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lsprotocol import types

from .lens import refresh_lens_views

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")


def sync_compare_model(server: LogitlsServer) -> None:
    """Load, swap or drop the compare model to match the settings (queued ahead of requests)."""
    wanted = server.settings.lens.compare_model.strip()
    # Compared token by token, both tokenizers here: a server's model is known only by its token texts.
    if wanted == server.compare_spec or server.engine is None or server.engine.capabilities.scored_remotely:
        return
    settings, engine = server.settings, server.engine
    loop = asyncio.get_running_loop()
    server.compare_spec = wanted

    def load(_should_stop) -> None:
        server.compare_engine = None  # the old one's memory goes before the new one arrives
        if not wanted:
            return
        from ..engine import Engine
        from ..engine.compare import TokenizersDiffer, check_same_tokenizer
        from ..engine.loading import ModelLoadError

        try:
            other = Engine.load(wanted, dtype=settings.dtype, device=settings.device, threads=settings.threads,
                                trust_remote_code=settings.trust_remote_code)
            check_same_tokenizer(engine, other)
        except (ModelLoadError, TokenizersDiffer, OSError, ValueError) as exc:
            message = f"lens.compareModel {wanted!r} is not compared: {exc}"
            logger.error("%s", message)
            loop.call_soon_threadsafe(server.tell, message, types.MessageType.Error)
            return
        other.configure(max_context_tokens=settings.max_context_tokens, alternatives=settings.hover_alternatives,
                        cached_documents=settings.cached_documents)
        server.compare_engine = other
        logger.info("lens.compareModel %s loaded beside %s", wanted, settings.model)

    def loaded(_future) -> None:
        # Lens passes scored without (or with the old) second model are stale: score again, redraw.
        for record in server.documents.records():
            record.drop_lens_pass()
        refresh_lens_views(server)

    future = server.worker.enqueue(load, key="compare-load", priority=-1)
    future.add_done_callback(lambda done: done.cancelled() or done.exception() or loaded(done))
