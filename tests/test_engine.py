"""The engine against independent computations: softmax of the model's own logits, HF generate."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import NOTEBOOK_IDS, NOTEBOOK_TEXT, counting_feeds, reference_model

PROMPTS = [NOTEBOOK_TEXT, "The capital of France is", "def f(x):\n    return", "a"]


def reference_logprobs(engine, ids: list[int]) -> torch.Tensor:
    """Log-probabilities of every position from one plain forward pass, no cache."""
    with torch.inference_mode():
        logits = reference_model(engine)(torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


def test_tokenize_reproduces_the_notebook(tiny_engine):
    tokenized = tiny_engine.tokenize(NOTEBOOK_TEXT)
    assert tokenized.ids == NOTEBOOK_IDS
    assert [t.text for t in tokenized.tokens][:3] == ["U", "d", "acity"]
    assert tokenized.tokens[-2].text == " gener"
    assert "".join(NOTEBOOK_TEXT[a:b] for a, b in tokenized.offsets) == NOTEBOOK_TEXT


@pytest.mark.parametrize("prompt", PROMPTS)
def test_top_n_is_the_softmax_of_the_logits(tiny_engine, prompt):
    result = tiny_engine.next_tokens(prompt, 20)
    expected = reference_logprobs(tiny_engine, tiny_engine.tokenizer(prompt)["input_ids"])[-1]
    top_lp, top_ids = expected.topk(20)
    assert [c.id for c in result.choices] == top_ids.tolist()
    for choice, lp in zip(result.choices, top_lp.tolist()):
        assert choice.logprob == pytest.approx(lp, abs=1e-5)
        assert choice.prob == pytest.approx(math.exp(lp), rel=1e-5)
    probs = [c.prob for c in result.choices]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) <= 1 + 1e-6
    assert [c.rank for c in result.choices] == list(range(1, 21))


def test_full_vocabulary_sums_to_one(tiny_engine):
    result = tiny_engine.next_tokens("hello", tiny_engine.vocab_size)
    assert len(result.choices) == tiny_engine.vocab_size
    assert sum(c.prob for c in result.choices) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("n", [0, -1, 10**9])
def test_n_out_of_range_is_refused(tiny_engine, n):
    with pytest.raises(ValueError, match="between 1 and the vocabulary size"):
        tiny_engine.next_tokens("hello", n)


def test_empty_text_conditions_on_the_start_token(tiny_engine):
    result = tiny_engine.next_tokens("", 5)
    expected = reference_logprobs(tiny_engine, [tiny_engine.tokenizer.eos_token_id])[-1]
    assert [c.id for c in result.choices] == expected.topk(5).indices.tolist()
    assert result.context_tokens == 1 and not result.truncated  # the start token alone


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_equals_hf_generate(tiny_engine, prompt):
    ids = torch.tensor([tiny_engine.tokenize(prompt).ids])
    reference = reference_model(tiny_engine).generate(ids, do_sample=False, max_new_tokens=30, eos_token_id=None,
                                           pad_token_id=0)[0, ids.shape[1]:].tolist()
    tiny_engine.eos_ids, saved = set(), tiny_engine.eos_ids  # generate above ran without EOS stops too
    try:
        steps = list(tiny_engine.greedy(prompt, max_new_tokens=30))
    finally:
        tiny_engine.eos_ids = saved
    assert [s.token.id for s in steps] == reference
    assert "".join(s.text for s in steps) == tiny_engine.tokenizer.decode(reference, skip_special_tokens=True)


def test_greedy_max_length_counts_the_prompt(tiny_engine):
    prompt_tokens = len(tiny_engine.tokenizer(NOTEBOOK_TEXT)["input_ids"])
    steps = list(tiny_engine.greedy(NOTEBOOK_TEXT, max_length=prompt_tokens + 7))
    assert len(steps) <= 7
    if not steps or steps[-1].token.id not in tiny_engine.eos_ids:
        assert len(steps) == 7
    assert list(tiny_engine.greedy(NOTEBOOK_TEXT, max_length=3)) == []


def test_token_scores_match_a_full_forward_pass(tiny_engine):
    text = "The quick brown fox jumps over the lazy dog. " * 2
    scores = tiny_engine.token_scores(text, document="scores")
    ids = tiny_engine.tokenizer(text)["input_ids"]
    logprobs = reference_logprobs(tiny_engine, ids)
    assert [s.token.id for s in scores.tokens] == ids
    assert scores.tokens[0].prob is None  # nothing precedes the first token (GPT-2 adds no BOS)
    for i in range(1, len(ids)):
        s = scores.tokens[i]
        row = logprobs[i - 1]
        assert s.logprob == pytest.approx(row[ids[i]].item(), abs=1e-4)
        assert s.rank == int((row > row[ids[i]]).sum()) + 1
        assert [a.id for a in s.alternatives] == row.topk(tiny_engine.alternatives).indices.tolist()
        assert text[s.start:s.end] == s.token.text


def test_long_text_is_cut_from_the_left(tiny_engine):
    window = tiny_engine.context_window
    text = " word" * (window * 2)
    result = tiny_engine.next_tokens(text, 3)
    assert result.truncated and result.context_tokens <= window
    ids = tiny_engine.tokenizer(text)["input_ids"][-result.context_tokens:]
    assert [c.id for c in result.choices] == reference_logprobs(tiny_engine, ids)[-1].topk(3).indices.tolist()
    scores = tiny_engine.token_scores(text)
    assert scores.truncated and len(scores.tokens) <= window and scores.offset > 0
    steps = list(tiny_engine.greedy(text, max_new_tokens=10))
    assert 0 < len(steps) <= 10  # room is left in the window for what is generated


def test_cancelled_work_raises_and_the_engine_still_answers(tiny_engine):
    from logitls.engine import Cancelled

    with pytest.raises(Cancelled):
        tiny_engine.next_tokens(" word" * 40, 3, document="cancel", should_stop=lambda: True)
    with pytest.raises(Cancelled):
        list(tiny_engine.greedy("hello", max_new_tokens=5, document="cancel", should_stop=lambda: True))
    fresh = tiny_engine.next_tokens("hello there", 3, document="cancel")
    assert [c.id for c in fresh.choices] == reference_logprobs(
        tiny_engine, tiny_engine.tokenizer("hello there")["input_ids"])[-1].topk(3).indices.tolist()


# -- the embedded default model: real language ---------------------------------------------


def test_default_model_knows_the_capital_of_france(default_engine):
    top = default_engine.next_tokens("The capital of France is", 3).choices
    assert top[0].text == " Paris"
    assert 0.6 < top[0].prob < 0.9


def test_default_model_completes_numpy_import(default_engine):
    assert default_engine.next_tokens("import numpy as", 3).choices[0].text == " np"


def test_default_model_greedy_equals_generate_and_stops_at_eos(default_engine):
    prompt = "The capital of France is"
    ids = torch.tensor([default_engine.tokenize(prompt).ids])
    reference = reference_model(default_engine).generate(ids, do_sample=False, max_length=100)[0, ids.shape[1]:].tolist()
    steps = list(default_engine.greedy(prompt, max_length=100))
    assert [s.token.id for s in steps] == reference
    assert steps[-1].token.id in default_engine.eos_ids and steps[-1].text == ""
    assert "".join(s.text for s in steps).startswith(" Paris.")


def test_document_scores_slide_over_a_long_text(tiny_engine):
    """Longer than the window: every token after the first is scored, each window from scratch."""
    text = " ".join(f"word{i % 7}" for i in range(200))
    ids = tiny_engine.tokenizer(text)["input_ids"]
    window = tiny_engine.context_window
    assert len(ids) > 2 * window
    stride = window // 2
    scores = tiny_engine.document_scores(text, stride=stride, document="long-lens")
    assert scores.truncated and len(scores.tokens) == len(ids)
    assert scores.tokens[0].prob is None and all(s.prob is not None for s in scores.tokens[1:])
    # token i is scored inside the window that first covers it, as the transformers guide does, except
    # that the last window (completion's) scores all it can with `window - stride` tokens of context
    last_start = tiny_engine._window_start(len(ids))
    handover = last_start + window - stride
    covered_by = {}
    for begin in range(0, last_start, stride):
        for i in range(begin, min(begin + window, handover)):
            covered_by.setdefault(i, begin)
    for i in range(1, len(ids)):
        begin = covered_by.get(i, last_start)
        assert i - begin >= window - stride or begin == 0
        row = reference_logprobs(tiny_engine, ids[begin:i])[-1]
        assert scores.tokens[i].logprob == pytest.approx(row[ids[i]].item(), abs=1e-4)


def test_document_scores_equal_token_scores_within_the_window(tiny_engine):
    text = "The quick brown fox jumps over the lazy dog."
    a = tiny_engine.document_scores(text, document="within")
    b = tiny_engine.token_scores(text, document="within-2")
    assert [(s.token.id, s.logprob, s.rank) for s in a.tokens] == [(s.token.id, s.logprob, s.rank) for s in b.tokens]


def test_document_scores_again_feeds_nothing(tiny_engine):
    """Hover asks for the lens's scores of the same text: no window is computed twice."""
    text = " ".join(f"word{i % 7}" for i in range(200))
    first = tiny_engine.document_scores(text, document="again")
    fed: list[int] = []
    with counting_feeds(tiny_engine, fed):
        second = tiny_engine.document_scores(text, document="again")
    assert fed == []
    assert [(s.token.id, s.logprob, s.rank) for s in second.tokens] == \
        [(s.token.id, s.logprob, s.rank) for s in first.tokens]
    tiny_engine.forget("again")


def test_completion_generation_and_lens_share_one_window(tiny_engine):
    """On a document longer than the window every feature cuts it at the same token, so a keystroke
    feeds the new tokens once, not one prefill per feature (the tiny models have a 64-token context)."""
    from logitls.engine import Engine

    engine, key = tiny_engine, "one-window"
    options = dict(max_context_tokens=0, alternatives=engine.alternatives, cached_documents=engine.cached_documents)
    engine.configure(**options, score_prefill=True)  # as the server does with the lens on
    text = " ".join(f"word{i % 7}" for i in range(58))  # 116 tokens
    edited = text + " word4"  # stays in the same quarter-window block: the window start does not move
    engine.eos_ids, saved_eos = set(), engine.eos_ids
    fed: list[int] = []
    try:
        engine.document_scores(text, document=key)  # the lens has run once
        with counting_feeds(engine, fed):
            completion = engine.next_tokens(edited, 5, document=key)
            assert sum(fed) <= 4, fed  # the appended word
            fed.clear()
            generated = [s.token.id for s in engine.greedy(edited, max_new_tokens=8, document=key)]
            assert fed == [1] * 7  # decode steps only: the prompt's window is the one completion fed
            fed.clear()
            lens = engine.document_scores(edited, document=key)
            # The generated tokens are cropped off; the appended word's tokens, fed unscored by completion
            # (see score_bulk), are fed again with the one before them to score them: nothing else.
            assert sum(fed) <= 4, fed
        fresh = Engine(engine.loaded)
        fresh.eos_ids = set()
        assert [c.id for c in completion.choices] == [c.id for c in fresh.next_tokens(edited, 5).choices]
        assert generated == [s.token.id for s in fresh.greedy(edited, max_new_tokens=8, document="g")]
        expected = fresh.document_scores(edited, document="l")
        assert [s.token.id for s in lens.tokens] == [s.token.id for s in expected.tokens]
        assert all((a.logprob is None and b.logprob is None) or abs(a.logprob - b.logprob) < 1e-4
                   for a, b in zip(lens.tokens, expected.tokens))
        assert completion.truncated and lens.truncated
    finally:
        if "forward" in vars(engine.model):
            del engine.model.forward
        engine.eos_ids = saved_eos
        engine.configure(**options, score_prefill=False)
        engine.forget(key)


@pytest.fixture(scope="module")
def bos_engine(tiny_models):
    """The tiny Llama with a Llama-style tokenizer: it puts a BOS before every text."""
    from conftest import build_gpt2_tokenizer

    from logitls.engine import Engine
    from logitls.engine.loading import load_model

    loaded = load_model(str(tiny_models["llama"]), device="cpu")
    loaded.tokenizer = build_gpt2_tokenizer(add_bos_token=True, bos_token="<|endoftext|>")
    return Engine(loaded)


def test_a_text_cut_from_the_left_keeps_the_tokenizers_bos(bos_engine):
    engine = bos_engine
    bos = engine.tokenizer.bos_token_id
    text = " ".join(f"word{i % 7}" for i in range(80))
    ids = engine.tokenizer(text)["input_ids"]
    assert ids[0] == bos and len(ids) > engine.context_window
    result = engine.next_tokens(text, 5, document="bos")
    assert result.truncated
    window = [bos] + ids[len(ids) - result.context_tokens + 1:]  # the BOS, then the text's end
    assert [c.id for c in result.choices] == reference_logprobs(engine, window)[-1].topk(5).indices.tolist()

    scores = engine.token_scores(text, document="bos-scores")
    assert [s.token.id for s in scores.tokens] == window
    assert scores.offset == scores.tokens[1].start > 0
    assert scores.tokens[1].logprob == pytest.approx(reference_logprobs(engine, window)[0, window[1]].item(), abs=1e-4)

    reference = reference_model(engine).generate(torch.tensor([window]), do_sample=False, max_new_tokens=8, eos_token_id=None,
                                      pad_token_id=0)[0, len(window):].tolist()
    engine.eos_ids, saved = set(), engine.eos_ids
    try:
        assert [s.token.id for s in engine.greedy(text, max_new_tokens=8, document="bos")] == reference
    finally:
        engine.eos_ids = saved

    first_tokens = []  # the first token of every window the lens feeds from an empty cache
    original = engine.model.forward

    def forward(tokens, cache, *args):
        if cache.length == 0:
            first_tokens.append(tokens[0])
        return original(tokens, cache, *args)

    engine.model.forward = forward
    try:
        lens = engine.document_scores(text, document="bos-lens")
    finally:
        del engine.model.forward
    assert len(first_tokens) > 1 and set(first_tokens) == {bos}
    assert lens.tokens[-1].logprob == pytest.approx(reference_logprobs(engine, window)[-2, window[-1]].item(), abs=1e-4)


def test_token_score_at_scores_one_window_of_a_long_document(tiny_engine):
    """Hover on a document many windows long: the token's score given the window that ends at it
    (on the quarter-window grid), from one prefill of at most the window; a nearby hover feeds only
    the tokens in between, and one before reads what is there."""
    from logitls.engine import Engine
    from logitls.engine.windows import window_start

    engine = tiny_engine
    text = " ".join(f"word{i % 7}" for i in range(200))
    ids, offsets = engine.vocabulary.encode(text)
    assert len(ids) > 4 * engine.context_window
    index = len(ids) // 2
    fed: list[int] = []
    with counting_feeds(engine, fed):
        score = engine.token_score_at(text, offsets[index][0] + 1, document="hover-long")
    assert score.index == index and (score.start, score.end) == offsets[index]
    start = window_start(index + 1, engine.text_window)
    assert 0 < sum(fed) == index + 1 - start <= engine.text_window and max(fed) <= 32
    cut = text[offsets[start][0]: offsets[index][1]]  # the window, as a text on its own
    fresh = Engine(engine.loaded).token_scores(cut)
    assert not fresh.truncated and fresh.tokens[-1].token.id == score.token.id
    assert score.logprob == pytest.approx(fresh.tokens[-1].logprob, abs=1e-4)
    assert score.rank == fresh.tokens[-1].rank
    row = reference_logprobs(engine, ids[start: index + 1])[-2]
    assert score.logprob == pytest.approx(row[ids[index]].item(), abs=1e-4)
    fed.clear()
    with counting_feeds(engine, fed):
        before = engine.token_score_at(text, offsets[index - 1][0], document="hover-long")
        assert fed == [] and before.index == index - 1  # inside what the hover window holds
        after = engine.token_score_at(text, offsets[index + 1][0], document="hover-long")
        assert sum(fed) <= 2 and after.index == index + 1  # the same window: the token and the one before it
    assert engine.token_score_at(text, len(text) + 5, document="hover-long") is None
    engine.forget("hover-long")
    assert not any(key.startswith("hover-long") for key in engine.cached_documents_keys())


def test_token_score_at_within_the_window_is_the_documents_score(tiny_engine):
    text = "The quick brown fox jumps over the lazy dog."
    scores = tiny_engine.document_scores(text, document="hover-short")
    fox = next(s for s in scores.tokens if s.token.text == " fox")
    fed: list[int] = []
    with counting_feeds(tiny_engine, fed):
        score = tiny_engine.token_score_at(text, fox.start + 1, document="hover-short")
    assert fed == []  # the document's own slot, already scored
    assert (score.index, score.token.id, score.logprob, score.rank) == (fox.index, fox.token.id, fox.logprob, fox.rank)
    tiny_engine.forget("hover-short")
