"""The per-document KV cache must never change an answer: cached == computed from scratch."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import counting_feeds, reference_model

WORDS = ["the", " cat", " sat", " on", "\n", " mat", "é", " 😀", ".", "ing", " un", "believ", "able", "  ", "\t"]

edit = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(WORDS)),
    st.tuples(st.just("delete"), st.integers(0, 400), st.integers(1, 6)),
    st.tuples(st.just("insert"), st.integers(0, 400), st.sampled_from(WORDS)),
    st.tuples(st.just("paste"), st.integers(0, 400), st.lists(st.sampled_from(WORDS), min_size=3, max_size=25)),
    st.tuples(st.just("switch"), st.integers(0, 2)),
)


def apply(text: str, change) -> str:
    kind = change[0]
    if kind == "append":
        return text + change[1]
    if kind == "delete":
        at = change[1] % (len(text) + 1)
        return text[:at] + text[at + change[2]:]
    if kind == "insert":
        at = change[1] % (len(text) + 1)
        return text[:at] + change[2] + text[at:]
    if kind == "paste":
        at = change[1] % (len(text) + 1)
        return text[:at] + "".join(change[2]) + text[at:]
    return text


def from_scratch(engine, text: str, n: int = 5):
    ids = engine.tokenizer(text)["input_ids"] or [engine.start_id]
    ids = ids[engine._window_start(len(ids)):]
    with torch.inference_mode():
        logits = reference_model(engine)(torch.tensor([ids])).logits[0, -1].float()
    return torch.log_softmax(logits, -1).topk(n)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(edit, min_size=1, max_size=12))
def test_cached_top_n_equals_from_scratch(tiny_engine, changes):
    documents = ["The cat sat on the mat.", "def f(x):\n    return x", ""]
    current = 0
    for change in changes:
        if change[0] == "switch":
            current = change[1]
        else:
            documents[current] = apply(documents[current], change)
        text = documents[current]
        cached = tiny_engine.next_tokens(text, 5, document=f"prop-{current}")
        expected_lp, expected_ids = from_scratch(tiny_engine, text)
        assert [c.id for c in cached.choices] == expected_ids.tolist()
        for choice, lp in zip(cached.choices, expected_lp.tolist()):
            assert abs(choice.logprob - lp) < 1e-4
        # scores (hover) from the same cache agree with a full forward pass too
        if change[0] in ("insert", "paste") and text:
            scores = tiny_engine.token_scores(text, document=f"prop-{current}")
            ids = [s.token.id for s in scores.tokens]
            if len(ids) > 1:
                with torch.inference_mode():
                    row = torch.log_softmax(reference_model(tiny_engine)(torch.tensor([ids])).logits[0].float(), -1)
                for i in range(1, len(ids)):
                    assert abs(scores.tokens[i].logprob - row[i - 1, ids[i]].item()) < 1e-4


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(edit, min_size=1, max_size=6))
def test_greedy_is_unchanged_by_the_cache(tiny_engine, changes):
    text = "Once upon a time"
    for change in changes:
        text = apply(text, change)
        tiny_engine.next_tokens(text, 3, document="prop-greedy")  # leave the cache in some state
        cached = [s.token.id for s in tiny_engine.greedy(text, max_new_tokens=8, document="prop-greedy")]
        tiny_engine.forget("fresh")
        fresh = [s.token.id for s in tiny_engine.greedy(text, max_new_tokens=8, document="fresh")]
        assert cached == fresh


def test_lru_keeps_at_most_the_configured_documents(tiny_engine):
    tiny_engine.configure(max_context_tokens=0, alternatives=tiny_engine.alternatives, cached_documents=2)
    try:
        for n in range(5):
            tiny_engine.next_tokens(f"document number {n}", 3, document=f"lru-{n}")
        kept = [k for k in tiny_engine._documents if k.startswith("lru-")]
        assert kept == ["lru-3", "lru-4"]
    finally:
        tiny_engine.configure(max_context_tokens=0, alternatives=tiny_engine.alternatives, cached_documents=8)


def test_a_keystroke_feeds_only_the_changed_tail(tiny_engine):
    text = "The quick brown fox jumps over the lazy"
    tiny_engine.next_tokens(text, 3, document="tail")
    state = tiny_engine._documents["tail"]
    kept_before = len(state.ids)
    fed: list[int] = []
    with counting_feeds(tiny_engine, fed):
        tiny_engine.next_tokens(text + " d", 3, document="tail")
    assert 1 <= sum(fed) <= 2 < kept_before  # one or two new tokens, not the whole text


def test_scoring_on_prefill_keeps_the_cache_for_the_next_keystroke(tiny_engine):
    """With score_prefill, a whole-document pass after a completion's prefill feeds (almost) nothing again."""
    text = "The quick brown fox jumps over the lazy dog. " * 3
    tiny_engine.configure(max_context_tokens=0, alternatives=tiny_engine.alternatives,
                          cached_documents=tiny_engine.cached_documents, score_prefill=True)
    fed: list[int] = []
    tiny_engine.next_tokens(text, 3, document="scored")
    with counting_feeds(tiny_engine, fed):
        scores = tiny_engine.document_scores(text, document="scored")
        assert fed == []  # every score was computed while completing
        fed.clear()
        tiny_engine.next_tokens(text + "The", 3, document="scored")  # a keystroke: one token, unscored
        assert fed == [1]
        tiny_engine.document_scores(text + "The", document="scored")
        assert fed == [1, 2]  # the lens re-feeds just the last two tokens to score the new one
        assert all(s.prob is not None for s in scores.tokens[1:])
        tiny_engine.configure(max_context_tokens=0, alternatives=tiny_engine.alternatives,
                              cached_documents=tiny_engine.cached_documents, score_prefill=False)


# -- sliding-window attention: the cache forgets what falls out of the window ------------------

SLIDING_TEXT = " ".join(f"word{i % 7}" for i in range(12))  # 24 tokens: past the 16-token window


def test_an_edit_before_the_sliding_window_equals_from_scratch(sliding_engine, monkeypatch):
    """An edit further back than the sliding layers keep states for: the cache is rebuilt, not cropped."""
    from logitls.engine import transformers_model as kv_cache

    monkeypatch.setattr(kv_cache, "SLIDING_SLACK", 2, raising=False)
    engine = sliding_engine
    assert len(engine.tokenizer(SLIDING_TEXT)["input_ids"]) > engine.model.config.sliding_window
    engine.next_tokens(SLIDING_TEXT, 3, document="sliding-edit")
    for text in (SLIDING_TEXT[:10] + " X" + SLIDING_TEXT[10:], SLIDING_TEXT[:-3], SLIDING_TEXT + " and more"):
        cached = engine.next_tokens(text, 5, document="sliding-edit")
        expected_lp, expected_ids = from_scratch(engine, text)
        assert [c.id for c in cached.choices] == expected_ids.tolist()
        assert max(abs(c.logprob - lp) for c, lp in zip(cached.choices, expected_lp.tolist())) < 1e-4


def test_a_keystroke_past_the_sliding_window_feeds_only_the_tail(sliding_engine):
    engine = sliding_engine
    engine.next_tokens(SLIDING_TEXT, 3, document="sliding-tail")
    fed: list[int] = []
    with counting_feeds(engine, fed):
        for text in (SLIDING_TEXT + " w", SLIDING_TEXT + " wo", SLIDING_TEXT + " wor"):
            fed.clear()
            cached = engine.next_tokens(text, 5, document="sliding-tail")
            assert sum(fed) <= 2  # the changed last token or two, not the whole text again
            assert [c.id for c in cached.choices] == from_scratch(engine, text)[1].tolist()
            assert cached.context_tokens > engine.model.config.sliding_window


def test_greedy_past_the_sliding_window_equals_generate(sliding_engine, monkeypatch):
    """Decoding far past the window, with the slack trimmed away several times on the way."""
    from logitls.engine import transformers_model as kv_cache

    monkeypatch.setattr(kv_cache, "SLIDING_SLACK", 2)
    engine = sliding_engine
    ids = torch.tensor([engine.tokenize(SLIDING_TEXT).ids])
    reference = reference_model(engine).generate(ids, do_sample=False, max_new_tokens=24, eos_token_id=None,
                                      pad_token_id=0)[0, ids.shape[1]:].tolist()
    engine.eos_ids, saved = set(), engine.eos_ids
    try:
        steps = [s.token.id for s in engine.greedy(SLIDING_TEXT, max_new_tokens=24, document="sliding-greedy")]
    finally:
        engine.eos_ids = saved
    assert steps == reference


# -- any edit sequence, any attention: the cached answer is the fresh engine's answer ----------

LONG_START = " ".join(f"line{i % 5} = value{i % 3}" for i in range(20))  # ~120 tokens: past every window


def assert_same_as_a_fresh_engine(engine, fresh, text: str, document: str) -> None:
    fresh.forget_all()
    cached, expected = engine.next_tokens(text, 5, document=document), fresh.next_tokens(text, 5)
    assert [c.id for c in cached.choices] == [c.id for c in expected.choices]
    assert max(abs(a.logprob - b.logprob) for a, b in zip(cached.choices, expected.choices)) < 1e-4
    assert (cached.context_tokens, cached.truncated) == (expected.context_tokens, expected.truncated)
    cached_scores, expected_scores = engine.token_scores(text, document=document), fresh.token_scores(text)
    assert [s.token.id for s in cached_scores.tokens] == [s.token.id for s in expected_scores.tokens]
    for a, b in zip(cached_scores.tokens, expected_scores.tokens):
        assert (a.logprob is None) == (b.logprob is None)
        if a.logprob is not None:
            assert abs(a.logprob - b.logprob) < 1e-4


def run_edits(engine, changes, prefix: str) -> None:
    from logitls.engine import Engine

    fresh = Engine(engine.loaded)
    documents = [LONG_START, "The cat sat on the mat.", ""]
    current = 0
    for change in changes:
        if change[0] == "switch":
            current = change[1]
        else:
            documents[current] = apply(documents[current], change)
        assert_same_as_a_fresh_engine(engine, fresh, documents[current], f"{prefix}-{current}")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(edit, min_size=1, max_size=6))
def test_any_edits_give_a_fresh_engines_answers(tiny_engine, changes):
    run_edits(tiny_engine, changes, "fresh-full")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(edit, min_size=1, max_size=6))
def test_any_edits_give_a_fresh_engines_answers_with_sliding_windows(sliding_engine, monkeypatch, changes):
    from logitls.engine import transformers_model as kv_cache

    monkeypatch.setattr(kv_cache, "SLIDING_SLACK", 3, raising=False)  # most edits then reach past what the cache keeps
    run_edits(sliding_engine, changes, "fresh-sliding")


def test_layers_of_other_kinds_are_kept_and_a_cache_with_one_is_not_cropped():
    """Only transformers' two plain layers are replaced; any other kind (a subclass, a recurrent
    state) is kept, and a crop it might not support changes nothing: the caller re-feeds instead."""
    from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

    from logitls.engine.transformers_model import GrowableLayer, SlidingLayer, _replacement, crop_cache

    class OtherLayer(DynamicLayer):
        pass

    other = OtherLayer()
    assert _replacement(other) is other
    assert type(_replacement(DynamicLayer())) is GrowableLayer
    assert type(_replacement(DynamicSlidingWindowLayer(sliding_window=4))) is SlidingLayer
    cache = DynamicCache()
    cache.layers = [GrowableLayer(), other]
    for layer in cache.layers:
        layer.update(torch.zeros(1, 1, 6, 2), torch.zeros(1, 1, 6, 2))
    assert not crop_cache(cache, 2)
    assert [layer.keys.shape[-2] for layer in cache.layers] == [6, 6]
    cache.layers = cache.layers[:1]
    assert crop_cache(cache, 2) and cache.layers[0].keys.shape[-2] == 4
