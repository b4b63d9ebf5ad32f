"""LSP positions <-> offsets into the document text, in the negotiated position encoding.

The one place where positions are converted (the document store in lsp/document.py applies edits
with it too, so the server's lines are the client's). Python strings index code points (UTF-32);
an LSP client counts UTF-16 code units unless it offered UTF-8 or UTF-32 at `initialize`.

Lines end at `\\n`, `\\r\\n` or a lone `\\r`, as the spec says, and nowhere else: not at the form
feed, vertical tab, `\\x1c`-`\\x1e`, NEL, LINE SEPARATOR or PARAGRAPH SEPARATOR that
`str.splitlines` also breaks at; an editor shows those inside a line.

Reading a position:
- a character past the end of its line means the end of the line (the spec: "defaults back to
  the line length"); so does a character between the `\\r` and `\\n` of a `\\r\\n`;
- a character inside a character (the second UTF-16 unit of an emoji, a middle UTF-8 byte) means
  the start of that character;
- a line past the end of the document is an error (PositionError, answered as InvalidParams): a
  client that sends one has lost track of the document, and guessing would answer for text that is
  not there. `clamped_offset` instead reads it as the end of the text, as vscode-languageserver's
  reference TextDocument does; the document store uses that for edits, which cannot be refused.

Conversions cost time linear in the text: one regex pass finds the line starts, and units are
counted by encoding slices (C speed). `positions()` converts many offsets in one sweep, so
colouring every token of a long single-line file stays linear.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Iterable

from lsprotocol import types

UTF8, UTF16, UTF32 = "utf-8", "utf-16", "utf-32"
_LINE_END = re.compile(r"\r\n?|\n")
_SURROGATE = re.compile("[\ud800-\udfff]")


class PositionError(ValueError):
    """A position that does not exist in the document."""


def encoding_name(encoding: object) -> str:
    """'utf-8', 'utf-16' or 'utf-32' for a PositionEncodingKind or its string; UTF-16 when unknown,
    the spec's default."""
    name = getattr(encoding, "value", encoding)
    return name if name in (UTF8, UTF32) else UTF16


def line_starts(text: str) -> list[int]:
    """Offsets where the lines of `text` start, by LSP's rule (\\n, \\r\\n, lone \\r)."""
    return [0, *(match.end() for match in _LINE_END.finditer(text))]


def units(text: str, encoding: str) -> int:
    """Code units `text` takes in the encoding (surrogatepass: a lone surrogate still counts one
    UTF-16 unit, as in the client's string)."""
    if encoding == UTF32:
        return len(text)
    if encoding == UTF8:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def code_points(line: str, character: int, encoding: str) -> int:
    """How many code points of `line` its first `character` code units cover, rounding down inside
    a character."""
    if encoding == UTF32 or units(line, encoding) == len(line):
        return min(character, len(line))  # every code point is one unit here
    if _SURROGATE.search(line) is None:
        # Slice the encoded bytes and decode them back: C speed. A cut inside a character leaves an
        # incomplete tail, which is dropped (a high surrogate in UTF-16, a partial sequence in UTF-8).
        if encoding == UTF8:
            return len(line.encode("utf-8")[:character].decode("utf-8", "ignore"))
        head = line.encode("utf-16-le")[:2 * character]
        if len(head) >= 2 and 0xD8 <= head[-1] <= 0xDB:
            head = head[:-2]
        return len(head.decode("utf-16-le"))
    count = seen = 0  # lone surrogates: count them one by one, as the client does
    for char in line:
        seen += units(char, encoding)
        if seen > character:
            break
        count += 1
    return count


class PositionMap:
    """Converts between LSP positions and offsets for one snapshot of a document's text."""

    def __init__(self, text: str, encoding: object = types.PositionEncodingKind.Utf16) -> None:
        self.text = text
        self.encoding = encoding_name(encoding)
        self.starts = line_starts(text)

    def line_end(self, line: int) -> int:
        """Offset of the end of `line`, before its line break."""
        if line + 1 >= len(self.starts):
            return len(self.text)
        end = self.starts[line + 1] - 1
        if end > self.starts[line] and self.text[end - 1] == "\r" and self.text[end] == "\n":
            end -= 1
        return end

    def offset(self, position: types.Position) -> int:
        """Offset (code points from the start) of a position; PositionError for a negative one or a
        line past the end of the document."""
        line, character = position.line, position.character
        if line < 0 or character < 0:
            raise PositionError(f"position {line}:{character} is negative")
        if line >= len(self.starts):
            raise PositionError(f"line {line} is past the end of the document ({len(self.starts)} lines)")
        start = self.starts[line]
        return start + code_points(self.text[start:self.line_end(line)], character, self.encoding)

    def clamped_offset(self, position: types.Position) -> int:
        """Like `offset`, but a line past the end means the end of the text and a negative one its
        start: how the reference TextDocument applies an edit."""
        if position.line >= len(self.starts):
            return len(self.text)
        if position.line < 0:
            return 0
        return self.offset(types.Position(line=position.line, character=max(0, position.character)))

    def _snap(self, offset: int) -> int:
        if not 0 <= offset <= len(self.text):
            raise PositionError(f"offset {offset} outside the document")
        if 0 < offset < len(self.text) and self.text[offset - 1] == "\r" and self.text[offset] == "\n":
            return offset - 1  # inside a \r\n: the end of its line, as the client reads it
        return offset

    def position(self, offset: int) -> types.Position:
        offset = self._snap(offset)
        line = bisect_right(self.starts, offset) - 1
        start = self.starts[line]
        return types.Position(line=line, character=units(self.text[start:offset], self.encoding))

    def positions(self, offsets: Iterable[int]) -> list[types.Position]:
        """Positions of many offsets, in their order, in one sweep over the text: each stretch of a
        line is counted once, however many offsets fall on it."""
        snapped = [self._snap(offset) for offset in offsets]
        out: list[types.Position | None] = [None] * len(snapped)
        line, cursor, counted = 0, 0, 0  # `counted` units lie between the line's start and cursor
        starts, text, encoding = self.starts, self.text, self.encoding
        for index in sorted(range(len(snapped)), key=snapped.__getitem__):
            offset = snapped[index]
            if line + 1 < len(starts) and starts[line + 1] <= offset:
                line = bisect_right(starts, offset, lo=line + 1) - 1
                cursor = starts[line]
                counted = 0
            counted += units(text[cursor:offset], encoding)
            cursor = offset
            out[index] = types.Position(line=line, character=counted)
        return out  # type: ignore[return-value]

    def range(self, start: int, end: int) -> types.Range:
        first, last = self.positions((start, end))
        return types.Range(start=first, end=last)

    def ranges(self, spans: Iterable[tuple[int, int]]) -> list[types.Range]:
        """Ranges of many (start, end) offset pairs, in one sweep (see `positions`)."""
        spans = list(spans)
        flat = self.positions(offset for span in spans for offset in span)
        return [types.Range(start=flat[2 * i], end=flat[2 * i + 1]) for i in range(len(spans))]
