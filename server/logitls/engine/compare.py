"""Two models on the same text: per token, log p(main) − log p(other).

Use cases: base vs fine-tuned, small vs large, float32 vs bfloat16 (a fidelity check users can run
themselves). Both models must tokenize alike, since a token-by-token comparison needs the same
tokens: different vocabularies are refused with a clear message rather than aligned.
"""

from __future__ import annotations

from dataclasses import replace

from .types import TextScores, TokenScore


class TokenizersDiffer(ValueError):
    """The two models split text differently: a token-by-token comparison would be meaningless."""


def check_same_tokenizer(main, other) -> None:
    if main.tokenizer.get_vocab() != other.tokenizer.get_vocab():
        raise TokenizersDiffer(f"the models tokenize differently ({len(main.tokenizer)} vs {len(other.tokenizer)} "
                               "tokens in their vocabularies): a per-token comparison needs the same tokenizer")


def compare_scores(main, other, text: str, *, document: str = "", stride: int | None = None,
                   should_stop=None) -> tuple[list[TokenScore], TextScores, TextScores]:
    """Every token of `text` scored by both models (each with its own context window): the main model's
    scores, each with `compare_logprob` (the other model's) and so `compare_delta`."""
    check_same_tokenizer(main, other)
    ours = main.document_scores(text, document=document, stride=stride, should_stop=should_stop)
    theirs = other.document_scores(text, document=document, stride=stride, should_stop=should_stop)
    return with_comparison(ours, theirs).tokens, ours, theirs


def with_comparison(scores: TextScores, other: TextScores) -> TextScores:
    """`scores` with each token's log-probability under the other model (same tokens: check_same_tokenizer)."""
    if [s.token.id for s in scores.tokens] != [s.token.id for s in other.tokens]:
        raise TokenizersDiffer("the models split this text into different tokens (their special tokens differ)")
    tokens = [replace(a, compare_logprob=b.logprob) for a, b in zip(scores.tokens, other.tokens)]
    return replace(scores, tokens=tokens)
