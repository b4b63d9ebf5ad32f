"""Scores from OpenAI's `echo`: `echo: true, logprobs: k, max_tokens: 1` returns the prompt's tokens
with their log-probabilities and top k (never `max_tokens: 0`: llama-cpp-python reads 0 as "no
limit"). Ranks are exact inside the top k and a bound below it.

A server that does not echo prompt log-probabilities (it refuses `echo`, or answers without the
prompt) is detected on the first hover; that is a fact about the server, said once, not a failure:
hover then says the server gives no scores, and completion and generate work.
"""

from __future__ import annotations

from typing import Any

from ...types import Capabilities, TextScores, TokenScore
from ..transport import BackendError
from .base import NO_SCORES, Dialect

ECHO = Capabilities(ranks="top-k", document_scores=False, healing=False, scored_remotely=True)


class EchoDialect(Dialect):
    capabilities = ECHO
    shifted_by_default = False  # see _echo_is_shifted

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self.echo_supported: bool | None = None  # None: not probed yet
        self._echo_shifted: bool | None = None
        self._after_first: dict[tuple[str, int], Any] = {}  # (first token's text, k) -> the distribution after it

    def _no_echo(self, why: str) -> TextScores:
        self.echo_supported = False
        self.capabilities = NO_SCORES
        backend = self.backend
        backend.health.tell_once("echo", "warning", f"the inference server at {backend.base_url} ({self.name}) "
                                 f"{why}: hover says so, and the surprisal lens is off; completion and generate work.")
        return TextScores([], False, 0)

    async def token_scores(self, text: str) -> TextScores:
        if self.echo_supported is False:
            return TextScores([], False, 0)
        backend = self.backend
        try:
            choice, offset, k = await backend.top_logprobs(
                text, max(10, backend.alternatives), {"echo": True, "max_tokens": 1, "temperature": 0})
        except BackendError as exc:
            if exc.kind == "request" and exc.status in (400, 422, 501) and "echo" in f"{exc.body} {exc}".lower():
                return self._no_echo(f"refuses `echo` ({str(exc)[-120:]}), so it gives no log-probabilities of "
                                     f"a text")
            raise
        window = text[offset:]
        generated = str(choice.get("text", ""))
        logprobs = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else {}
        tokens = logprobs.get("tokens")
        token_logprobs = logprobs.get("token_logprobs")
        echoed = (isinstance(tokens, list) and isinstance(token_logprobs, list) and len(tokens) > 1
                  and generated.startswith(window[:16]) and len("".join(map(str, tokens))) >= len(window) // 2)
        if not echoed:
            return self._no_echo("does not return log-probabilities of the prompt (`echo` with `logprobs`)")
        self.echo_supported = True
        tokens = [str(t) for t in tokens]
        tops = list(backend.top_list(logprobs.get("top_logprobs"), "top_logprobs"))
        tops += [None] * (len(tokens) - len(tops))
        joined = "".join(tokens)
        shifted = self._echo_is_shifted(window, joined, generated)
        offsets = logprobs.get("text_offset")
        if joined.startswith(window) or not isinstance(offsets, list):
            offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]  # exact when pieces are whole
        starts = [o if isinstance(o, int) else None for o in offsets[:len(tokens)]]
        starts += [None] * (len(tokens) - len(starts))
        if shifted and len(tokens) > 1 and tops[0] is None and starts[1] and starts[1] < len(window):
            # The distribution that predicts token 1 is the one after token 0, which the echo blanks
            # (OpenAI's null for the first entry): ask for it, the next tokens after token 0 alone.
            tops[0] = await self._after_first_token(window[:starts[1]], k)
        scores: list[TokenScore] = []
        for index, piece in enumerate(tokens):
            start = starts[index]
            if start is None or start >= len(window):
                break  # the generated token, and anything after the prompt
            end = min(start + len(piece), len(window))
            token = backend.token(piece)
            # Every entry may hold one token beyond the top k (llama-cpp-python and vLLM add the echoed
            # token's own): a true value of that distribution, but not one of its top k.
            distribution = (tops[index - 1] if index > 0 else None) if shifted else tops[index]
            listed = backend.choices(distribution)
            alternatives = listed[:k]
            if shifted:
                lp = next((c.logprob for c in listed if c.text == piece), None)
            else:
                lp = backend.logprob(token_logprobs[index] if index < len(token_logprobs) else None)
            if lp is None:
                # The first token (nothing before it), or one below every alternative the server listed.
                scores.append(TokenScore(len(scores), token, start + offset, end + offset, None, None, None,
                                         alternatives if index > 0 else []))
                continue
            better = [a for a in alternatives if a.logprob > lp]
            # The rank is exact only when the token is among the alternatives (or beats them all).
            known = any(a.id == token.id for a in alternatives) or len(better) < len(alternatives)
            rank = len(better) + 1 if known else None
            scores.append(TokenScore(len(scores), token, start + offset, end + offset, backend.prob(lp), lp, rank,
                                     alternatives))
        return TextScores(scores, offset > 0, offset)

    def _echo_is_shifted(self, window: str, joined: str, generated: str) -> bool:
        """Whether echo entry i holds the distribution AFTER token i (the one predicting token i + 1).

        llama-cpp-python (0.3.x) pairs token i with the logits at position i of what it evaluated: with
        a BOS token first, those predict token i (as OpenAI's format means) and the echo goes on to the
        generated token; without BOS they come after token i, and the echo stops at the prompt's end,
        as the generated token was never evaluated. So an echo that covers the prompt only, while a
        token was generated, is shifted; one that covers the generated token is not. When nothing was
        generated (end of sequence), what the last echo showed holds."""
        if len(generated) > len(window):
            self._echo_shifted = len(joined) <= len(window)
        if self._echo_shifted is None:
            return self.shifted_by_default
        return self._echo_shifted

    async def _after_first_token(self, prefix: str, k: int) -> Any:
        """The next-token distribution after `prefix` (one token: the scored text's first), kept per prefix."""
        key = (prefix, k)
        if key not in self._after_first:
            try:
                self._after_first[key] = (await self.backend.next_distribution(prefix, k))[0]
            except BackendError:
                return None  # token 1 goes without: the echo's scores of the others still stand
            while len(self._after_first) > max(8, self.backend.cached_documents):
                self._after_first.pop(next(iter(self._after_first)))
        return self._after_first[key]

    def forget_all(self) -> None:
        self._after_first.clear()
