"""Plain data that crosses from the engine to its callers (CLI, LSP). No torch types here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, runtime_checkable


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

    def token_at(self, offset: int) -> TokenScore | None:
        """The token whose characters hold `offset` (the first, where byte pieces of one character overlap)."""
        return next((score for score in self.tokens if score.start <= offset < score.end), None)


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


# -- one interface for every backend: the local Engine and the inference servers ---------------------

class Cancelled(Exception):
    """The caller's stop check fired. The local engine's cache keeps whatever was already computed;
    a server's request was abandoned and its connection closed."""


@dataclass
class GreedyStep:
    token: Token
    text: str  # what this step appends to the document (may be "" while a character is incomplete)


# What a backend's hover rank means: the token's rank in the whole vocabulary ("exact"), its rank
# when it is among the top k the server listed and a bound below them ("top-k"), or none at all.
RANKS = ("exact", "top-k", "none")


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared so that callers never probe for methods or attributes."""

    ranks: str  # one of RANKS
    document_scores: bool  # a whole document scored in one pass: the surprisal lens
    healing: bool  # completion and inline completion that continue a half-typed word
    scored_remotely: bool  # every scored token costs a server request: hover asks for one position
    branch: bool = False  # an alternative token can be fed by id (logitls.branch)
    # the whole next-token distribution is at hand, so the p after temperature/top-k/top-p/min-p can be shown
    sampled_distribution: bool = False

    def __post_init__(self) -> None:
        if self.ranks not in RANKS:
            raise ValueError(f"ranks must be one of {RANKS}, got {self.ranks!r}")


LOCAL = Capabilities(ranks="exact", document_scores=True, healing=True, scored_remotely=False, branch=True,
                     sampled_distribution=True)


@runtime_checkable
class Backend(Protocol):
    """The calls the language server and the CLI make, answered by the local Engine or a server.

    Optional calls exist exactly where `capabilities` declares them: `document_scores` (the lens),
    `healed_next_tokens` / `healed_greedy` (healing)."""

    capabilities: Capabilities
    loaded: Any
    vocab_size: int
    eos_ids: set[int]
    context_window: int

    def configure(self, *, max_context_tokens: int, alternatives: int, cached_documents: int,
                  **local_only: Any) -> None: ...

    def token_count(self, text: str) -> int: ...

    def next_tokens(self, text: str, n: int = 10, *, document: str = "",
                    should_stop: Callable[[], bool] | None = None) -> NextTokens: ...

    def token_scores(self, text: str, *, document: str = "",
                     should_stop: Callable[[], bool] | None = None) -> TextScores: ...

    def token_score_at(self, text: str, offset: int, *, document: str = "",
                       should_stop: Callable[[], bool] | None = None) -> TokenScore | None: ...

    def greedy(self, text: str, *, max_new_tokens: int | None = None, max_length: int | None = None,
               document: str = "", should_stop: Callable[[], bool] | None = None) -> Iterator[GreedyStep]: ...

    def generate_text(self, text: str, **options: Any) -> str: ...

    def forget(self, document: str) -> None: ...

    def forget_all(self) -> None: ...

    def cached_documents_keys(self) -> list[str]: ...
