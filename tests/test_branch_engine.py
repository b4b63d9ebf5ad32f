"""engine/branch.py without a model: which text a branch replaces, where it stops, and what it writes."""

from __future__ import annotations

import pytest

from logitls.engine.branch import boundary, branch_region, continue_branch
from logitls.engine.engine import GreedyStep
from logitls.engine.types import Token

TEXT = "The capital of France is Paris. It is big.\nNext line."
PARIS = (TEXT.index(" Paris"), TEXT.index(" Paris") + len(" Paris"))


class ScriptedEngine:
    """greedy() yields the given pieces, one token each; records what it was asked."""

    eos_ids = {0}

    def __init__(self, pieces):
        self.pieces = pieces
        self.calls = []

    def greedy(self, text, *, max_new_tokens, document="", should_stop=None):
        self.calls.append((text, max_new_tokens))
        for i, piece in enumerate(self.pieces[:max_new_tokens]):
            yield GreedyStep(Token(0 if piece is None else i + 1, piece or ""), piece or "")


@pytest.mark.parametrize("until, end", [("line", TEXT.index("\n")), ("sentence", TEXT.index(" It")),
                                        ("tokens", PARIS[1])])
def test_the_region_a_branch_replaces(until, end):
    assert branch_region(TEXT, *PARIS, until) == (PARIS[0], end)


def test_a_region_without_an_end_runs_to_the_end_of_the_text():
    assert branch_region("a b c", 1, 3, "line") == (1, 5)
    assert branch_region("a b c", 1, 3, "sentence") == (1, 5)
    assert branch_region("a b. c", 1, 3, "sentence") == (1, 4)
    with pytest.raises(ValueError):
        branch_region("a", 0, 1, "word")


def test_sentence_ends_wait_for_what_follows():
    assert boundary("It is 3.", "sentence", at_end_of_text=False) is None  # 3.5 may come
    assert boundary("It is 3.5 m. And", "sentence", at_end_of_text=False) == len("It is 3.5 m.")
    assert boundary("He said \"no.\" Then", "sentence", at_end_of_text=False) == len("He said \"no.\"")
    assert boundary("no end\nnext", "sentence", at_end_of_text=False) == len("no end")


def test_line_mode_stops_before_the_newline_and_replaces_the_rest_of_the_line():
    engine = ScriptedEngine([".", " It", " is", " old", ".\n", "More"])
    result = continue_branch(engine, TEXT, *PARIS, " Lyon", until="line", max_new_tokens=10, document="d")
    assert engine.calls == [("The capital of France is Lyon", 10)]
    assert (result.new_text, result.start, result.end, result.stop) == (" Lyon. It is old.", PARIS[0],
                                                                        TEXT.index("\n"), "line")
    assert result.generated_tokens == 5
    branched = TEXT[:result.start] + result.new_text + TEXT[result.end:]
    assert branched == "The capital of France is Lyon. It is old.\nNext line."


def test_sentence_mode_stops_after_the_sentence():
    engine = ScriptedEngine([",", " France", ".", " It", " is"])
    result = continue_branch(engine, TEXT, *PARIS, " Lyon", until="sentence", max_new_tokens=10)
    assert result.new_text == " Lyon, France." and result.stop == "sentence"
    assert TEXT[:result.start] + result.new_text + TEXT[result.end:] == \
        "The capital of France is Lyon, France. It is big.\nNext line."


def test_a_sentence_ending_with_the_generation_counts():
    result = continue_branch(ScriptedEngine([" too", "."]), TEXT, *PARIS, " Lyon", until="sentence",
                             max_new_tokens=2)
    assert result.new_text == " Lyon too." and result.stop == "length"


def test_tokens_mode_replaces_the_token_only_and_eos_stops():
    result = continue_branch(ScriptedEngine([" and", " Nice", None, " never"]), TEXT, *PARIS, " Lyon",
                             until="tokens", max_new_tokens=10)
    assert (result.new_text, result.end, result.stop) == (" Lyon and Nice", PARIS[1], "eos")


def test_no_new_tokens_writes_the_alternative_only():
    engine = ScriptedEngine([" x"])
    result = continue_branch(engine, TEXT, *PARIS, " Lyon", until="tokens", max_new_tokens=0)
    assert result.new_text == " Lyon" and engine.calls == []


def test_progress_and_the_deadline():
    seen = []
    result = continue_branch(ScriptedEngine([" a", " b", " c"]), TEXT, *PARIS, " Lyon", until="tokens",
                             max_new_tokens=3, on_step=lambda text, n: seen.append((text, n)),
                             deadline_passed=lambda: len(seen) >= 2)
    assert seen == [(" a", 1), (" a b", 2)]
    assert result.new_text == " Lyon a b" and result.stop == "timeout"
