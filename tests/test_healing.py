"""Token healing in the engine: completions of what was typed, with honest probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import counting_feeds, reference_model
from hypothesis import HealthCheck, given, settings, strategies as st

from logitls.engine.healing import VocabularyIndex, backoff, word_region_start


def test_the_word_region_is_the_half_typed_word_with_the_blanks_before_it():
    assert word_region_start("The capital is Pa") == len("The capital is")
    assert word_region_start("The capital is ") == len("The capital is")
    assert word_region_start("x = np.zer") == len("x =")
    assert word_region_start("line\n") == len("line\n")  # a newline is not part of the word
    assert word_region_start("") == 0


def test_backoff_takes_the_last_token_always_and_the_word_at_most_three():
    assert backoff([" is", " "], [False, False], " is ") == 1
    assert backoff(["x", " =", " np", ".", "zer"], [False] * 5, "x = np.zer") == 3
    assert backoff(["a", " b", ".", "c", "d"], [False] * 5, "a b.cd") == 3  # bounded
    assert backoff(["<s>", "Pa"], [True, False], "Pa") == 1
    assert backoff(["Pa"], [False], "Pa") == 0  # nothing would be left to condition on
    assert backoff(["x", "\ufffd"], [False, False], "x😀") == 0  # half a character: nothing to match


def test_the_vocabulary_index_finds_tokens_extending_a_text():
    index = VocabularyIndex([" Paris", " Pa", " Par", "Paris", " P", " Pal"], [True, True, True, True, True, False])
    lo, hi = index.starting_with(" Pa")
    assert sorted(index.texts[lo:hi]) == [" Par", " Paris"]  # longer than " Pa", " Pal" is unusable


def independent_path_probability(engine, base_ids: list[int], path_ids: list[int]) -> tuple[float, float]:
    """(probability of path_ids after base_ids, of its last token alone), one full forward, no cache."""
    with torch.inference_mode():
        logits = reference_model(engine)(input_ids=torch.tensor([base_ids + path_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    steps = [float(logprobs[len(base_ids) - 1 + i, token]) for i, token in enumerate(path_ids)]
    return math.exp(sum(steps)), math.exp(steps[-1])


def check_healed(engine, text: str, document: str = "") -> None:
    healed = engine.healed_next_tokens(text, 8, document=document)
    assert text.endswith(healed.fragment) and healed.fragment_start == len(text) - len(healed.fragment)
    ids = engine._prepare(text)[0]
    pieces, k = "", 0
    while pieces != healed.fragment:
        k += 1
        pieces = "".join(engine.token(i).text for i in ids[len(ids) - k:])
    base = ids[: len(ids) - k]
    probs = [c.prob for c in healed.choices]
    assert probs == sorted(probs, reverse=True)
    for choice in healed.choices:
        applied = text[: healed.fragment_start] + choice.new_text
        assert applied.startswith(text) and len(applied) > len(text)
        assert choice.new_text == healed.fragment[: len(choice.new_text) - len(choice.tokens[-1].text)] \
            + choice.tokens[-1].text or not healed.healed
        if healed.healed:
            path, step = independent_path_probability(engine, base, [t.id for t in choice.tokens])
            assert choice.prob == pytest.approx(path, rel=1e-3, abs=1e-7)
            assert choice.step_prob == pytest.approx(step, rel=1e-3, abs=1e-7)
            assert 0 <= choice.share <= 1.0 + 1e-6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(["the", "cap", "ital", " ", "  ", "is", "Pa", "ris", "\n", ".", "é", "x=",
                                       "np", "(", "1"]), min_size=1, max_size=8))
def test_applying_any_item_reads_as_typed_and_probabilities_match_the_logits(tiny_gpt2_engine, words):
    check_healed(tiny_gpt2_engine, "".join(words), document="property")


def test_healing_on_the_default_model_completes_what_was_typed(default_engine):
    cases = {
        "The capital of France is ": " Paris",
        "The capital of France is Pa": " Paris",
        "for i in ra": " range",
        "import numpy as np\nx = np.zer": " np.zeros",
        "The capital of France is": " is Paris",
    }
    for text, expected in cases.items():
        healed = default_engine.healed_next_tokens(text, 5, document="cases")
        first = healed.choices[0]
        assert first.new_text == expected, (text, healed.choices[:3])
        assert (text[: healed.fragment_start] + first.new_text).startswith(text)
    paris = default_engine.healed_next_tokens("The capital of France is ", 3).choices[0]
    assert paris.step_prob == pytest.approx(0.7725, abs=2e-3)  # p(' Paris' | '…is'), as the notebook shows
    check_healed(default_engine, "The capital of France is Pa")


def test_nothing_to_heal_falls_back_to_the_raw_next_tokens(tiny_gpt2_engine):
    empty = tiny_gpt2_engine.healed_next_tokens("", 5)
    raw = [c.id for c in tiny_gpt2_engine.next_tokens("", 40).choices if not (c.token.special or c.token.partial)]
    assert not empty.healed and empty.fragment == ""
    assert [c.tokens[-1].id for c in empty.choices] == raw[:5]


def test_healed_greedy_starts_with_the_healed_token(default_engine):
    steps = list(default_engine.healed_greedy("The capital of France is ", max_new_tokens=3))
    assert steps[0].text == "Paris" and len(steps) == 3
    inserted = "".join(s.text for s in steps)
    assert ("The capital of France is " + inserted).startswith("The capital of France is Paris")


def test_healing_costs_no_extra_forward_while_typing(default_engine):
    calls: list[int] = []
    default_engine.healed_next_tokens("The capital of France is", 3, document="typing")
    with counting_feeds(default_engine, calls):
        for typed in (" ", " P", " Pa", " Par"):
            default_engine.healed_next_tokens("The capital of France is" + typed, 3, document="typing")
    assert len(calls) <= 4  # one forward per keystroke, none extra for the distributions before the word
