"""What every server dialect answers, and the defaults: a dialect is one class in one file.

A dialect knows how its server scores a text (hover, the lens) and what it adds to each request;
the backend (backend.py) does everything the servers share: next tokens, greedy streaming, caps,
context cuts, health. A new dialect subclasses `Dialect` (or `EchoDialect`), says when a server is
its kind in `matches`, and is listed in dialects/__init__.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...types import Capabilities, TextScores, TokenScore

if TYPE_CHECKING:
    from ..backend import OpenAIBackend

NO_SCORES = Capabilities(ranks="none", document_scores=False, healing=False, scored_remotely=True)


class Dialect:
    name = "openai-compatible"
    capabilities = NO_SCORES

    def __init__(self, backend: "OpenAIBackend") -> None:
        self.backend = backend

    @staticmethod
    def matches(entry: dict, owner: str) -> bool:
        """Whether /v1/models' entry for the served model (`owner`: its owned_by, lower case) is this kind."""
        return False

    def request_extra(self) -> dict:
        """Fields every /v1/completions request of this dialect carries."""
        return {}

    # The samplers a sampled generation can ask this server for (request field names). The OpenAI API
    # has temperature, top_p and seed; llama.cpp's servers and vLLM add top_k and min_p.
    sampling_fields: tuple[str, ...] = ("temperature", "top_p", "seed")

    @property
    def scores_text(self) -> bool:
        return self.capabilities.ranks != "none"

    async def token_scores(self, text: str) -> TextScores:
        """Every token of `text` scored; empty where the server cannot."""
        return TextScores([], False, 0)

    async def token_score_at(self, text: str, offset: int, document: str = "") -> TokenScore | None:
        """The scored token that holds `offset` (hover): by default from the scores of the text up to
        the end of that line (a causal model never looks ahead, so later text changes nothing)."""
        line_end = text.find("\n", offset)
        scores = await self.backend.kept_token_scores(text if line_end < 0 else text[:line_end], document)
        return scores.token_at(offset)

    async def token_count(self, text: str) -> int | None:
        """Tokens in `text` as the server counts them; None where it cannot say."""
        return None

    async def document_scores(self, text: str, stride: int | None) -> TextScores:
        raise NotImplementedError(f"{self.name} servers do not score whole documents")

    def forget_all(self) -> None:
        """Drop what the dialect keeps between requests (before a reload)."""


def align(pieces: list[str], text: str, start: int = 0, special: Any = None) -> list[tuple[int, int]]:
    """Character spans in `text` of tokens given by their decoded text, from `start`.

    Servers send each token's text decoded alone: a special token (BOS) is not in the text (an empty
    span where it stands), and a byte of a multi-byte character decodes to U+FFFD: such pieces share
    the span of the characters between the last whole piece and the next one."""
    spans: list[tuple[int, int]] = []
    cursor, pending = start, []
    for piece in pieces:
        if piece and text.startswith(piece, cursor):
            end = cursor + len(piece)
            for index in pending:
                spans[index] = (spans[index][0], cursor)
            pending = []
            spans.append((cursor, end))
            cursor = end
            continue
        if piece and "\ufffd" not in piece and not (special and special(piece)):
            found = text.find(piece, cursor, cursor + 8 + len(piece))
            if found >= 0:  # the characters before it belong to the byte pieces before
                for index in pending:
                    spans[index] = (spans[index][0], found)
                if not pending and found > cursor and spans:
                    spans[-1] = (spans[-1][0], found)
                pending = []
                spans.append((found, found + len(piece)))
                cursor = found + len(piece)
                continue
        if piece and "\ufffd" in piece:
            pending.append(len(spans))
        spans.append((cursor, cursor))
    for index in pending:
        spans[index] = (spans[index][0], min(len(text), spans[index][0] + 1))
    return spans
