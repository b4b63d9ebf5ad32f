"""A long text tokenized from a checked cut: the same answers as a full tokenization, and only the first
request (or the first after an edit before the cut) tokenizes the whole text."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from logitls.engine import tail_tokens

LONG_LINE = " ".join(f"word{i % 7} x{i % 5}=f({i % 11})," for i in range(300))  # one line, GPT-2 words
NO_SPACES = ";".join(f"v{i % 13}=f{i % 7}(x{i % 5})" for i in range(400))  # minified: no space anywhere
LETTERS = "abcdefghijklmnopqrstuvwxyz" * 60  # one pre-token: no safe cut, the full tokenization serves


class CountingTokenizer:
    """The tokenizer, recording the length of every text it is asked to tokenize."""

    def __init__(self, tokenizer, lengths: list[int]) -> None:
        self._tokenizer, self._lengths = tokenizer, lengths

    def __call__(self, text, *args, **kwargs):
        self._lengths.append(len(text))
        return self._tokenizer(text, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@contextmanager
def counting(engine):
    lengths: list[int] = []
    original = engine.vocabulary.tokenizer
    engine.vocabulary.tokenizer = CountingTokenizer(original, lengths)
    try:
        yield lengths
    finally:
        engine.vocabulary.tokenizer = original


def answers(engine, text: str, document: str) -> dict:
    scores = engine.token_scores(text, document=document)
    healed = engine.healed_next_tokens(text, 5, document=document)
    return {
        "next": [(c.token.id, round(c.logprob, 4)) for c in engine.next_tokens(text, 5, document=document).choices],
        "healed": [(c.new_text, round(c.logprob, 4)) for c in healed.choices] + [healed.context_tokens],
        "scores": [(s.token.id, s.start, s.end, None if s.logprob is None else round(s.logprob, 4))
                   for s in scores.tokens] + [scores.offset, scores.truncated],
        "greedy": [s.token.id for s in engine.greedy(text, max_new_tokens=6, document=document)],
        "max_length": [s.token.id for s in engine.greedy(text, max_length=len(engine.tokenizer(text)["input_ids"]) + 3,
                                                         document=document)],
    }


@pytest.mark.parametrize("text", [LONG_LINE, NO_SPACES, LETTERS], ids=["words", "no-spaces", "letters"])
def test_answers_equal_a_full_tokenization(tiny_engine, monkeypatch, text):
    edits = [text, text + "q", text + ",f(3)", text[:-40], "f(1)," + text]  # typing, deleting, an edit before the cut
    expected = [answers(tiny_engine, edited, "tail-full") for edited in edits]  # shorter than MIN_CHARS: full
    tiny_engine.forget("tail-full")
    monkeypatch.setattr(tail_tokens, "MIN_CHARS", 200)
    for edited, full in zip(edits, expected):
        assert answers(tiny_engine, edited, "tail-cut") == full
    tiny_engine.forget("tail-cut")


@pytest.mark.parametrize("text", [LONG_LINE, NO_SPACES], ids=["words", "no-spaces"])
def test_only_the_first_request_tokenizes_the_whole_text(tiny_engine, monkeypatch, text):
    monkeypatch.setattr(tail_tokens, "MIN_CHARS", 200)
    assert len(tiny_engine.tokenizer(text)["input_ids"]) > 4 * tiny_engine.text_window
    with counting(tiny_engine) as lengths:
        tiny_engine.next_tokens(text, 3, document="tail-count")
    assert max(lengths) == len(text)  # the first request counts every token
    for edited in (text + "q", text + "qr", text + "qr,"):
        lengths.clear()
        with counting(tiny_engine) as lengths:
            tiny_engine.next_tokens(edited, 3, document="tail-count")
            tiny_engine.token_scores(edited, document="tail-count")
            list(tiny_engine.greedy(edited, max_new_tokens=2, document="tail-count"))
        assert lengths and max(lengths) < len(text) // 2, lengths
    lengths.clear()
    with counting(tiny_engine) as lengths:  # an edit before the cut: the whole text once more
        tiny_engine.next_tokens("f(1)," + text, 3, document="tail-count")
    assert max(lengths) == len(text) + 5
    tiny_engine.forget("tail-count")


@pytest.mark.parametrize("text", [LONG_LINE, NO_SPACES], ids=["words", "no-spaces"])
def test_a_cut_that_stops_being_a_token_boundary_is_not_used(tiny_engine, monkeypatch, text):
    """The text before a cut is unchanged but what follows now merges with it (a letter after a
    letter, a digit after a digit): the check sees no boundary there and the full tokenization serves."""
    monkeypatch.setattr(tail_tokens, "MIN_CHARS", 200)
    tailer = tail_tokens.TailTokenizer(tiny_engine.vocabulary)
    need = tiny_engine.text_window
    tailer.tail(text, "doc", need)
    [cut] = tailer._cuts["doc"]
    before = text[: cut.chars]
    for glue in ("zz", "77", "((", " ", "\n"):
        edited = before + glue + text[cut.chars:]
        tail = tailer.tail(edited, "doc", need)
        ids, offsets = tiny_engine.vocabulary.encode(edited)
        assert tail.first + len(tail.ids) == len(ids)
        assert (tail.ids, tail.offsets) == (ids[tail.first:], offsets[tail.first:]), glue
