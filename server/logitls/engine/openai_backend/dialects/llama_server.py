"""llama.cpp's own `llama-server` (`/v1/models` says `owned_by: "llamacpp"` and carries `meta`).

Its `/v1/completions` refuses `echo`, so no prompt log-probabilities come from there. Its own
`POST /completion` gives, with `n_probs: K`, the top K of the distribution of each GENERATED token
(`completion_probabilities[i].top_logprobs`, a softmax over the raw logits unless
`post_sampling_probs`). So hover asks, for the hovered position i, with the token ids before it
(`POST /tokenize`, `with_pieces`), `n_predict: 1`, `n_probs: K` and `cache_prompt: true` (the server
keeps the common prefix, so a hover after a hover costs about one decode step): the token's
probability and rank when it is within the top K (exact), else the bound (below the K-th).

A whole-document pass (the lens) would be one such request per token: `logitls bench --backend
openai` measures that cost, and the README says why the lens stays off here.
"""

from __future__ import annotations


from ...types import Capabilities, TextScores, TokenChoice, TokenScore
from ..transport import BackendError
from .base import Dialect, align

TOP_K = Capabilities(ranks="top-k", document_scores=False, healing=False, scored_remotely=True)


class LlamaServer(Dialect):
    name = "llama.cpp"
    capabilities = TOP_K

    sampling_fields = ("temperature", "top_k", "top_p", "min_p", "seed")

    @staticmethod
    def matches(entry: dict, owner: str) -> bool:
        return owner == "llamacpp" or isinstance(entry.get("meta"), dict)

    def request_extra(self) -> dict:
        return {"repeat_penalty": 1.0}  # greedy must be plain argmax

    def _k(self) -> int:
        return max(10, self.backend.alternatives)

    async def _tokenize(self, text: str) -> tuple[list[int], list[str]]:
        answer = await self.backend.transport.send(
            "POST", "/tokenize", {"content": text, "add_special": True, "with_pieces": True}, root=True)
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list):
            raise BackendError("malformed", f"the inference server at {self.backend.base_url} (llama.cpp) sent no "
                               f"tokens from /tokenize: {str(answer)[:120]!r}")
        ids, pieces = [], []
        for token in tokens:
            if isinstance(token, dict):
                ids.append(int(token.get("id", -1)))
                piece = token.get("piece", "")
                # A piece that is not whole UTF-8 comes as its bytes.
                pieces.append(piece if isinstance(piece, str) else bytes(piece).decode("utf-8", "replace"))
            else:
                ids.append(int(token))
                pieces.append("")
        return ids, pieces

    async def token_count(self, text: str) -> int | None:
        return len((await self._tokenize(text))[0])

    async def _position(self, ids: list[int], index: int) -> tuple[float | None, int | None, list[TokenChoice]]:
        """(logprob, rank, top K) of ids[index] given ids[:index]: exact within the top K, else (None, None)."""
        backend = self.backend
        answer = await backend.transport.send("POST", "/completion", {
            "prompt": ids[:index], "n_predict": 1, "n_probs": self._k(), "cache_prompt": True, "temperature": 0,
            "repeat_penalty": 1.0}, root=True)
        steps = answer.get("completion_probabilities") if isinstance(answer, dict) else None
        step = steps[0] if isinstance(steps, list) and steps and isinstance(steps[0], dict) else {}
        listed = step.get("top_logprobs") or step.get("probs") or []
        alternatives: list[TokenChoice] = []
        own: tuple[float, int] | None = None
        for rank, entry in enumerate(listed, start=1):
            if not isinstance(entry, dict):
                continue
            if "logprob" in entry:
                lp = backend.logprob(entry["logprob"])
            else:
                lp = backend.logprob_of_prob(entry.get("prob"))  # servers before the logprob fields
            if lp is None:
                continue
            text = entry.get("token", entry.get("tok_str", ""))
            alternatives.append(backend.choice(str(text), lp, rank))
            if entry.get("id") == ids[index] and own is None:
                own = (lp, rank)
        if own is None:
            return None, None, alternatives
        return own[0], own[1], alternatives

    def _score(self, index: int, piece: str, span: tuple[int, int], result) -> TokenScore:
        lp, rank, alternatives = result
        token = self.backend.token(piece)
        if lp is None:  # below the K listed: the hover states the bound
            return TokenScore(index, token, span[0], span[1], None, None, None, alternatives)
        margin = alternatives[0].prob - alternatives[1].prob if len(alternatives) > 1 else None
        return TokenScore(index, token, span[0], span[1], self.backend.prob(lp), lp, rank, alternatives, None, margin)

    async def token_score_at(self, text: str, offset: int, document: str = "") -> TokenScore | None:
        line_end = text.find("\n", offset)
        prefix = text if line_end < 0 else text[:line_end]
        ids, pieces = await self._tokenize(prefix)
        spans = align(pieces, prefix, special=self.backend.is_special)
        index = next((i for i, (s, e) in enumerate(spans) if s <= offset < e), None)
        if index is None:
            return None
        if index == 0:
            return TokenScore(0, self.backend.token(pieces[0]), *spans[0], None, None, None)
        return self._score(index, pieces[index], spans[index], await self._position(ids, index))

    async def token_scores(self, text: str) -> TextScores:
        """Every token, one request per position (what a lens pass would cost here; the bench uses it)."""
        ids, pieces = await self._tokenize(text)
        spans = align(pieces, text, special=self.backend.is_special)
        scores = [TokenScore(0, self.backend.token(pieces[0]), *spans[0], None, None, None)] if ids else []
        for index in range(1, len(ids)):
            scores.append(self._score(index, pieces[index], spans[index], await self._position(ids, index)))
        return TextScores(scores, False, 0)

