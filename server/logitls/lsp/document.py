"""The documents the client has open, kept equal to the client's text.

pygls's TextDocument splits lines with `str.splitlines`, which also breaks at `\\f`, `\\v`,
`\\x1c`-`\\x1e`, NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR, and reads a character past the end
of a line as one before its end: an edit after such a character, or past a line's end, lands
somewhere other than where the client put it, and every answer after that is for a text the user
does not have. Here an edit is applied as vscode-languageserver's reference TextDocument applies
it, with the positions of lsp/positions.py: LSP line ends only, a character past a line's end at
its end, a line past the document's end at the end of the text, a reversed range put right.
"""

from __future__ import annotations

import logging
from urllib.parse import unquote

from lsprotocol import types
from pygls.workspace import TextDocument, Workspace

from .positions import PositionMap, line_starts

logger = logging.getLogger("logitls")


class LspDocument(TextDocument):
    def _apply_incremental_change(self, change: types.TextDocumentContentChangePartial) -> None:
        text = self.source
        positions = PositionMap(text, self.position_codec.encoding)
        start, end = positions.clamped_offset(change.range.start), positions.clamped_offset(change.range.end)
        if start > end:
            start, end = end, start
        self._source = text[:start] + change.text + text[end:]

    @property
    def lines(self) -> tuple[str, ...]:
        """The lines with their line ends, by LSP's rule, for pygls's own helpers (as splitlines
        would give them: no empty last line after a final line break)."""
        text = self.source
        starts = line_starts(text)
        ends = [*starts[1:], len(text)]
        return tuple(text[a:b] for a, b in zip(starts, ends) if b > a)


class DocumentWorkspace(Workspace):
    """pygls's Workspace, holding LspDocuments."""

    @classmethod
    def like(cls, workspace: Workspace) -> "DocumentWorkspace":
        return cls(workspace.root_uri, workspace._sync_kind, list(workspace.folders.values()),
                   workspace.position_encoding)

    def _create_text_document(self, doc_uri: str, source: str | None = None, version: int | None = None,
                              language_id: str | None = None) -> TextDocument:
        return LspDocument(doc_uri, source=source, version=version, language_id=language_id,
                           sync_kind=self._sync_kind, position_codec=self._position_codec)

    def update_text_document(self, text_doc: types.VersionedTextDocumentIdentifier,
                             change: types.TextDocumentContentChangeEvent) -> None:
        if unquote(text_doc.uri) not in self._text_documents:
            # pygls raises KeyError, which the user sees as "Error in server"; nothing is lost by dropping it
            logger.warning("textDocument/didChange for %s, which is not open: ignored", text_doc.uri)
            return
        super().update_text_document(text_doc, change)
