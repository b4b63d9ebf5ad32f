"""LSP positions <-> offsets into the document text, in the negotiated position encoding.

The one place where positions are converted. Python strings index code points (UTF-32); an LSP
client counts UTF-16 code units unless it offered UTF-8 or UTF-32 at `initialize`. Unlike pygls's
codec, which clamps a position past the end of a line, this refuses it: a client that sends one
has lost track of the document, and guessing would answer for text that is not there.
"""

from __future__ import annotations

from bisect import bisect_right

from lsprotocol import types


class PositionError(ValueError):
    """A position that does not exist in the document."""


def _units(char: str, encoding: str) -> int:
    if encoding == types.PositionEncodingKind.Utf8:
        return len(char.encode("utf-8"))
    if encoding == types.PositionEncodingKind.Utf32:
        return 1
    return 2 if ord(char) > 0xFFFF else 1


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


class PositionMap:
    """Converts between LSP positions and offsets for one snapshot of a document's text."""

    def __init__(self, text: str, encoding: str = types.PositionEncodingKind.Utf16) -> None:
        self.text = text
        self.encoding = encoding
        self.starts = _line_starts(text)

    def _line_end(self, line: int) -> int:
        end = self.starts[line + 1] - 1 if line + 1 < len(self.starts) else len(self.text)
        if end > self.starts[line] and self.text[end - 1] == "\r":
            end -= 1  # the \r of a \r\n ending is not a position on the line
        return end

    def offset(self, position: types.Position) -> int:
        """Offset (code points from the start) of a position; PositionError if there is none."""
        line, character = position.line, position.character
        if line < 0 or character < 0:
            raise PositionError(f"position {line}:{character} is negative")
        if line >= len(self.starts):
            raise PositionError(f"line {line} is past the end of the document ({len(self.starts)} lines)")
        start, end = self.starts[line], self._line_end(line)
        units = 0
        for index in range(start, end):
            if units >= character:
                return index
            units += _units(self.text[index], self.encoding)
        if units >= character:  # exactly at the end of the line (or inside the last character)
            return end if units == character else end - 1
        raise PositionError(f"character {character} is past the end of line {line} ({units} {getattr(self.encoding, 'value', self.encoding)} units)")

    def position(self, offset: int) -> types.Position:
        if not 0 <= offset <= len(self.text):
            raise PositionError(f"offset {offset} outside the document")
        line = bisect_right(self.starts, offset) - 1
        start = self.starts[line]
        units = sum(_units(ch, self.encoding) for ch in self.text[start:offset])
        return types.Position(line=line, character=units)

    def range(self, start: int, end: int) -> types.Range:
        return types.Range(start=self.position(start), end=self.position(end))
