"""Plain data that crosses from the engine to its callers (CLI, LSP). No torch types here."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Token:
    """One vocabulary entry as the model sees it."""

    id: int
    text: str  # decoded text, exactly what inserting this token adds to a document
    special: bool = False  # BOS/EOS/chat markers: never inserted as raw markup
    partial: bool = False  # a byte-level piece of a multi-byte character: no text of its own


@dataclass(frozen=True)
class TokenChoice:
    """A candidate next token with its probability under the model."""

    token: Token
    prob: float
    logprob: float  # natural log
    rank: int  # 1 = the model's favourite

    @property
    def id(self) -> int:
        return self.token.id

    @property
    def text(self) -> str:
        return self.token.text


@dataclass(frozen=True)
class NextTokens:
    """The top-n next tokens after a text."""

    choices: list[TokenChoice]
    context_tokens: int  # how many tokens the model actually conditioned on
    truncated: bool  # True when the text was cut from the left to fit the context window


@dataclass(frozen=True)
class TokenScore:
    """How likely one token of a text was, given everything before it."""

    index: int  # position in the tokenized text
    token: Token
    start: int  # character offsets of the token in the text (Python str indices)
    end: int
    prob: float | None  # None for the first token when nothing precedes it
    logprob: float | None
    rank: int | None
    alternatives: list[TokenChoice] = field(default_factory=list)
    # How unsure the model was at this position, whatever was written: the entropy (bits) of its
    # next-token distribution, and p(its favourite) - p(its second choice). None where unknown (the
    # first token; a remote backend that sends only its top k).
    entropy_bits: float | None = None
    margin: float | None = None
    # The same token under a second model (lens.compareModel), where one is compared.
    compare_logprob: float | None = None

    @property
    def compare_delta(self) -> float | None:
        """log p(model) - log p(compare model), nats: positive where the main model found it likelier."""
        if self.logprob is None or self.compare_logprob is None:
            return None
        return self.logprob - self.compare_logprob

    @property
    def surprisal_bits(self) -> float | None:
        import math

        return None if self.logprob is None else -self.logprob / math.log(2)


@dataclass(frozen=True)
class TextScores:
    """Per-token scores of a whole text."""

    tokens: list[TokenScore]
    truncated: bool
    offset: int  # character offset in the original text where the scored window starts


@dataclass(frozen=True)
class TokenizedText:
    ids: list[int]
    tokens: list[Token]
    offsets: list[tuple[int, int]]


@dataclass(frozen=True)
class HealedChoice:
    """A completion that continues what was typed (token healing): `new_text` replaces the fragment."""

    new_text: str  # starts with the fragment; the document reads text[:fragment_start] + new_text
    tokens: list[Token]  # the tokens that spell new_text after the text before the fragment
    prob: float  # the model's probability of those tokens given the text before the fragment
    logprob: float
    step_prob: float  # the last token's probability given everything before it (the text as typed, for
    #                   a word taken as typed): the number a menu shows
    share: float  # prob / the mass of every continuation consistent with the fragment
    rank: int  # 1 = most likely consistent continuation
    extends_word: bool  # True: completes the typed word; False: the word is taken as typed, one token follows


@dataclass(frozen=True)
class HealedTokens:
    """The completion menu after token healing."""

    fragment_start: int  # character offset in the text where the backed-off fragment starts
    fragment: str  # the text backed off: the trailing whitespace or half-typed word, as tokens cover it
    choices: list[HealedChoice]
    consistent_mass: float  # probability (given the text before the fragment) of continuing what was typed
    healed: bool  # False: nothing was backed off or nothing continues the fragment; choices are the raw view
    context_tokens: int
    truncated: bool
