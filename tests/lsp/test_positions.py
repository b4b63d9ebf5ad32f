"""Positions and the document store, in process: LSP's line ends, clamping, the three encodings,
edits applied as the reference TextDocument applies them, and conversions linear in the text."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types

from conftest import ReferenceDocument
from logitls.lsp import positions as positions_module
from logitls.lsp.document import LspDocument
from logitls.lsp.positions import PositionError, PositionMap, line_starts
from pygls.workspace import PositionCodec

ODD_BREAKS = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # str.splitlines breaks here; LSP does not
ENCODINGS = ["utf-8", "utf-16", "utf-32"]


def P(line: int, character: int) -> types.Position:
    return types.Position(line=line, character=character)


def test_lines_end_at_lf_crlf_and_lone_cr_only():
    text = "a\nb\r\nc\rd" + ODD_BREAKS + "e"
    assert line_starts(text) == [0, 2, 5, 7]
    positions = PositionMap(text)
    assert positions.offset(P(3, 0)) == 7
    assert positions.position(len(text)) == P(3, len(ODD_BREAKS) + 2)
    assert [positions.line_end(line) for line in range(4)] == [1, 3, 6, len(text)]


def test_a_character_past_the_line_end_is_the_line_end():
    positions = PositionMap("one\r\ntwo\nlast")
    assert positions.offset(P(0, 3)) == 3
    assert positions.offset(P(0, 4)) == 3  # between \r and \n: not inside the line break
    assert positions.offset(P(0, 99)) == 3
    assert positions.offset(P(1, 2 ** 31 - 1)) == 8
    assert positions.offset(P(2, 99)) == 13


def test_a_line_past_the_end_is_an_error_for_requests_and_the_end_for_edits():
    positions = PositionMap("one\ntwo\n")
    assert positions.offset(P(2, 0)) == 8  # the empty line after the last line break exists
    with pytest.raises(PositionError, match="line 3 is past the end of the document"):
        positions.offset(P(3, 0))
    negative = SimpleNamespace(line=-1, character=0)  # lsprotocol refuses to build one; the converter too
    with pytest.raises(PositionError, match="negative"):
        positions.offset(negative)
    assert positions.clamped_offset(P(3, 5)) == 8
    assert positions.clamped_offset(negative) == 0


def test_an_offset_inside_a_crlf_is_the_end_of_its_line():
    positions = PositionMap("ab\r\ncd")
    assert positions.position(3) == P(0, 2)
    assert positions.positions([3, 4, 2]) == [P(0, 2), P(1, 0), P(0, 2)]


def test_utf16_counts_astral_characters_twice():
    text = "a😀b\n😀😀"
    positions = PositionMap(text, types.PositionEncodingKind.Utf16)
    assert positions.positions(range(len(text) + 1)) == [P(0, 0), P(0, 1), P(0, 3), P(0, 4), P(1, 0), P(1, 2),
                                                         P(1, 4)]
    assert [positions.offset(P(0, c)) for c in range(6)] == [0, 1, 1, 2, 3, 3]  # inside the emoji: its start
    assert positions.range(4, 6) == types.Range(start=P(1, 0), end=P(1, 4))


def test_utf8_counts_bytes_and_utf32_code_points():
    text = "é中😀x"
    utf8 = PositionMap(text, "utf-8")
    assert utf8.positions(range(5)) == [P(0, 0), P(0, 2), P(0, 5), P(0, 9), P(0, 10)]
    assert [utf8.offset(P(0, c)) for c in (0, 1, 2, 4, 5, 8, 9, 10, 11)] == [0, 0, 1, 1, 2, 2, 3, 4, 4]
    utf32 = PositionMap(text, types.PositionEncodingKind.Utf32)
    assert utf32.positions(range(5)) == [P(0, i) for i in range(5)]
    assert utf32.offset(P(0, 3)) == 3


def test_a_lone_surrogate_counts_as_the_client_counts_it():
    text = "a\ud800b😀c"  # JSON can carry a lone surrogate; it is one UTF-16 unit
    positions = PositionMap(text)
    assert positions.positions(range(len(text) + 1)) == [P(0, 0), P(0, 1), P(0, 2), P(0, 3), P(0, 5), P(0, 6)]
    assert [positions.offset(P(0, c)) for c in range(7)] == [0, 1, 2, 3, 3, 4, 5]


PIECES = list("ab \t\n\r") + ["\r\n", "é", "中", "😀", "𝔸"] + list(ODD_BREAKS)
text_strategy = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)


@settings(max_examples=150, deadline=None)
@given(text=text_strategy, encoding=st.sampled_from(ENCODINGS), data=st.data())
def test_positions_agree_with_the_reference_both_ways(text, encoding, data):
    positions = PositionMap(text, encoding)
    reference = ReferenceDocument(text, encoding)
    boundaries = reference.boundaries()
    offsets = data.draw(st.lists(st.integers(0, len(text)), max_size=12))
    for offset, position in zip(offsets, positions.positions(offsets)):
        assert position == positions.position(offset)
        line, character = reference.position_at(boundaries[offset])
        expected = reference.offset_at(line, character)  # inside a \r\n: the reference moves it before the \r
        assert boundaries[positions.offset(position)] == expected
    line = data.draw(st.integers(0, len(positions.starts) - 1))
    character = data.draw(st.integers(0, 4 * len(text) + 3))
    expected = reference.offset_at(line, character)
    if expected in boundaries:  # the reference would otherwise cut a character in two
        assert boundaries[positions.offset(P(line, character))] == expected


def document(text: str, encoding: str) -> LspDocument:
    return LspDocument("file:///t.txt", text, version=1, position_codec=PositionCodec(encoding=encoding))


def change(start, end, text: str) -> types.TextDocumentContentChangePartial:
    return types.TextDocumentContentChangePartial(range=types.Range(start=P(*start), end=P(*end)), text=text)


def test_an_edit_after_a_form_feed_lands_on_the_clients_line():
    doc = document("a\x0cb\nc\u2028d\re", "utf-16")
    doc.apply_change(change((1, 0), (1, 0), "X"))
    assert doc.source == "a\x0cb\nXc\u2028d\re"
    doc.apply_change(change((2, 0), (2, 1), "E"))
    assert doc.source == "a\x0cb\nXc\u2028d\rE"
    doc.apply_change(change((0, 99), (1, 1), ""))  # past the end of line 0 joins the lines
    assert doc.source == "a\x0cbc\u2028d\rE"
    assert doc.lines == ("a\x0cbc\u2028d\r", "E")


@st.composite
def edits(draw, reference: ReferenceDocument):
    """A range anywhere, often past a line's end or the document's, never cutting a character."""
    boundaries = reference.boundaries()

    def position():
        line, character = reference.position_at(draw(st.sampled_from(boundaries)))
        if draw(st.integers(0, 4)) == 0:
            line += draw(st.integers(0, 2))
            character += draw(st.integers(0, 3))
            if reference.offset_at(line, character) not in boundaries:
                character = 0
        return line, character

    return position(), position(), draw(text_strategy)


@settings(max_examples=150, deadline=None)
@given(text=text_strategy, encoding=st.sampled_from(ENCODINGS), data=st.data())
def test_edits_give_the_text_the_client_has(text, encoding, data):
    doc, reference = document(text, encoding), ReferenceDocument(text, encoding)
    for _ in range(data.draw(st.integers(1, 6))):
        start, end, new = data.draw(edits(reference))
        reference.apply(start, end, new)
        doc.apply_change(change(start, end, new))
        assert doc.source == reference.text


# -- linear time --------------------------------------------------------------------------------

def count_encoded(monkeypatch) -> list[int]:
    """Counts the characters positions.py encodes to count units: its work, whatever the machine."""
    counted = [0]
    real = positions_module.units

    def units(text, encoding):
        counted[0] += len(text)
        return real(text, encoding)

    monkeypatch.setattr(positions_module, "units", units)
    return counted


def test_many_spans_on_one_long_line_cost_one_pass(monkeypatch):
    text = "😀 " + "word " * 12_000  # 60 KB on a single line; the emoji makes UTF-16 differ from code points
    offsets = [i for i in range(len(text)) if text[i] == " "]
    counted = count_encoded(monkeypatch)
    result = PositionMap(text).positions(offsets)
    assert result[-1] == P(0, offsets[-1] + 1)
    assert counted[0] <= len(text)  # each stretch counted once: not once per offset from the line start


def test_semantic_tokens_of_a_long_line_are_linear(monkeypatch):
    from logitls.lsp.semantic_tokens import encode

    text = "😀 " + "word " * 12_000
    tokens = [SimpleNamespace(start=i, end=i + 5, rank=1 + i % 2000) for i in range(2, len(text) - 4, 5)]
    counted = count_encoded(monkeypatch)
    data = encode(text, SimpleNamespace(tokens=tokens), (10, 100, 1000), "utf-16")
    assert len(data) == 5 * len(tokens)
    assert data[:5] == [0, 3, 4, 0, 0]  # "word" after the emoji (2 units) and a space
    assert counted[0] <= 2 * len(text)
