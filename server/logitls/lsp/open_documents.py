"""What the server holds for each open document, in one record with one `forget`.

pygls's workspace keeps the text; everything else a feature keeps about a document (the lens pass
of its latest version, the last semantic tokens sent, a pending diagnostics publish) lives in the
document's `OpenDocument`. Closing the document forgets all of it at once
(`LogitlsServer.forget_document`), and the KV caches both models keep for it (the compare model's
too) are dropped after any model job still running for it has stopped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class OpenDocument:
    uri: str
    lens_pass: Any = None  # lsp.lens.LensPass for the latest version scored
    semantic_tokens: tuple[str, list[int]] | None = None  # (resultId, data) last sent, for deltas
    tasks: dict[str, asyncio.Task] = field(default_factory=dict)  # background work by name
    generations: dict[str, int] = field(default_factory=dict)  # the latest request of a feature (lens._score_one)

    def replace_task(self, name: str, task: asyncio.Task) -> None:
        """Run `task` as this document's `name` job, cancelling the one it replaces."""
        older = self.tasks.pop(name, None)
        if older is not None:
            older.cancel()
        self.tasks[name] = task

    def drop_lens_pass(self) -> None:
        """Stop and forget the lens pass: the next lens request scores the document again."""
        if self.lens_pass is not None:
            self.lens_pass.task.cancel()
            self.lens_pass = None

    def cancel_all(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        self.drop_lens_pass()
        self.semantic_tokens = None


class OpenDocuments:
    def __init__(self, is_open: Callable[[str], bool]) -> None:
        self._records: dict[str, OpenDocument] = {}
        self._is_open = is_open

    def __call__(self, uri: str) -> OpenDocument:
        """The record of an open document (made on first use)."""
        record = self._records.get(uri)
        if record is None:
            record = self._records[uri] = OpenDocument(uri)
        return record

    def peek(self, uri: str) -> OpenDocument | None:
        return self._records.get(uri)

    def records(self) -> list[OpenDocument]:
        return list(self._records.values())

    def is_open(self, uri: str) -> bool:
        return self._is_open(uri)

    def forget(self, uri: str) -> None:
        record = self._records.pop(uri, None)
        if record is not None:
            record.cancel_all()

    def __len__(self) -> int:
        return len(self._records)
