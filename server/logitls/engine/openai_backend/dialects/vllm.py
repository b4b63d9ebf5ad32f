"""vLLM: exact ranks from `prompt_logprobs`, and whole documents scored (the lens).

Shapes follow vLLM's source (vllm-project/vllm, `vllm/entrypoints/openai/completion/protocol.py` at
002032ee and `completion/serving.py` at 030ea52e; `vllm/v1/engine/processor.py`'s `_validate_logprobs`):

- `/v1/completions` with `prompt_logprobs: K` returns `choices[0].prompt_logprobs`: per prompt token a
  map `token id → {logprob, rank, decoded_token}` holding the prompt token itself, with its rank in
  the whole vocabulary, and the top K (ranks 1..K); position 0 is null (nothing before it);
- `echo: true` with `max_tokens: 0` echoes without generating, and `logprobs: 0` adds OpenAI's
  `logprobs.tokens` / `text_offset` for every prompt token (position 0 decoded too);
  `return_token_ids: true` adds `prompt_token_ids`;
- K above `--max-logprobs` (default 20) is a 400 "Requested prompt logprobs of K, which is greater
  than max allowed: 20": the backend clamps to the stated limit and says so once;
- a prompt longer than `max_model_len` is a 400; `POST /tokenize` (beside /v1) gives the token ids
  and `max_model_len`, so a long document is scored in windows (as the local lens does), each sent
  as token ids.

Prompt log-probabilities skip vLLM's prefix cache: every request is a full prefill. So one request
per document version (the backend keeps the last answer per document), and each window's answer is
kept by its token ids: an edit near the end of a long document sends only the windows it changed.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ...types import Capabilities, TextScores, TokenScore
from ...windows import sliding_spans
from ..transport import BackendError
from .base import Dialect, align

EXACT = Capabilities(ranks="exact", document_scores=True, healing=False, scored_remotely=True)
KEPT_WINDOWS = 64


class VLLM(Dialect):
    name = "vllm"
    capabilities = EXACT

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self._windows: OrderedDict[tuple[int, ...], tuple[list[str], list[Any], list[int]]] = OrderedDict()
        self._lead: list[int] | None = None

    sampling_fields = ("temperature", "top_k", "top_p", "min_p", "seed")

    @staticmethod
    def matches(entry: dict, owner: str) -> bool:
        return "vllm" in owner

    # -- requests ---------------------------------------------------------------------------------

    def _k(self) -> int:
        return max(10, self.backend.alternatives)

    async def _score(self, prompt: str | list[int]) -> tuple[list[str], list[Any], list[int]]:
        """(token texts, prompt_logprobs entries, token ids) of one prompt, echoed without generation."""
        backend = self.backend

        async def ask(k: int) -> dict:
            return await backend.completion({"prompt": prompt, "echo": True, "max_tokens": 0, "logprobs": 0,
                                             "prompt_logprobs": k, "temperature": 0, "return_token_ids": True})

        choice, _ = await backend.capped(self._k(), ask)
        entries = choice.get("prompt_logprobs")
        logprobs = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else {}
        if not isinstance(entries, list):
            raise BackendError("malformed", f"the inference server at {backend.base_url} (vllm) sent no "
                               f"prompt_logprobs: {str(choice)[:120]!r}")
        ids = choice.get("prompt_token_ids")
        if not (isinstance(ids, list) and len(ids) == len(entries)):
            # Older vLLM sends no ids: the prompt token is each map's first entry.
            ids = [int(next(iter(e))) if isinstance(e, dict) and e else -1 for e in entries]
        pieces = logprobs.get("tokens") if isinstance(logprobs.get("tokens"), list) else None
        if pieces is None or len(pieces) != len(entries):
            pieces = [self._decoded(e, i) for e, i in zip(entries, ids)]
        return [str(p) for p in pieces], entries, [int(i) for i in ids]

    @staticmethod
    def _decoded(entry: Any, token_id: int) -> str:
        own = entry.get(str(token_id)) if isinstance(entry, dict) else None
        return str(own.get("decoded_token") or "") if isinstance(own, dict) else ""

    async def _tokenize(self, text: str, special: bool = True) -> tuple[list[int], int] | None:
        """(ids, max_model_len) from POST /tokenize; None where the server has no such endpoint."""
        backend = self.backend
        try:
            answer = await backend.transport.send("POST", "/tokenize", {"model": backend.model_name, "prompt": text,
                                                                         "add_special_tokens": special}, root=True)
        except BackendError as exc:
            if exc.kind in ("not-found", "request"):
                return None
            raise
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list):
            return None
        return [int(t) for t in tokens], int(answer.get("max_model_len") or 0)

    async def token_count(self, text: str) -> int | None:
        tokenized = await self._tokenize(text)
        return None if tokenized is None else len(tokenized[0])

    async def _lead_ids(self) -> list[int]:
        """The special tokens the server's tokenizer puts before every text (a BOS), found once."""
        if self._lead is None:
            marked, plain = await self._tokenize("a"), await self._tokenize("a", special=False)
            lead: list[int] = []
            if marked and plain and marked[0][-len(plain[0]):] == plain[0]:
                lead = marked[0][: len(marked[0]) - len(plain[0])]
            self._lead = lead
        return self._lead

    # -- scores -----------------------------------------------------------------------------------

    def _token_score(self, index: int, piece: str, entry: Any, token_id: int, span: tuple[int, int]) -> TokenScore:
        backend = self.backend
        token = backend.token(piece)
        start, end = span
        if not isinstance(entry, dict):
            return TokenScore(index, token, start, end, None, None, None)
        k = self._k()
        listed = []
        for key, value in entry.items():
            lp = backend.logprob(value.get("logprob")) if isinstance(value, dict) else None
            if lp is None:
                continue
            rank = value.get("rank")
            if isinstance(rank, int) and not isinstance(rank, bool) and 1 <= rank <= k:
                listed.append((rank, str(value.get("decoded_token") or ""), lp))  # the prompt token's own may lie below
        listed.sort()
        alternatives = [backend.choice(text, lp, rank) for rank, text, lp in listed]
        own = entry.get(str(token_id))
        lp = backend.logprob(own.get("logprob")) if isinstance(own, dict) else None
        if lp is None:
            return TokenScore(index, token, start, end, None, None, None, alternatives)
        rank = own.get("rank") if isinstance(own.get("rank"), int) and not isinstance(own.get("rank"), bool) else None
        margin = alternatives[0].prob - alternatives[1].prob if len(alternatives) > 1 else None
        return TokenScore(index, token, start, end, backend.prob(lp), lp, rank, alternatives, None, margin)

    async def token_scores(self, text: str) -> TextScores:
        backend = self.backend
        (pieces, entries, ids), offset = await backend.fitting(text, self._score)
        window = text[offset:]
        spans = align(pieces, window, special=backend.is_special)
        scores = [self._token_score(i, p, e, t, (s + offset, en + offset))
                  for i, (p, e, t, (s, en)) in enumerate(zip(pieces, entries, ids, spans))]
        return TextScores(scores, offset > 0, offset)

    async def document_scores(self, text: str, stride: int | None) -> TextScores:
        """Every token scored given the text before it: in one request when the document fits the
        model's context, else in windows of `context_window` tokens every `stride` (default half a
        window), each scoring the tokens the earlier ones did not (the local lens's rule)."""
        backend = self.backend
        tokenized = await self._tokenize(text)
        if tokenized is None:
            return await self.token_scores(text)
        ids, model_len = tokenized
        # max_tokens 0 still reserves one position for the token vLLM samples and drops.
        window = max(2, (backend.context_window or model_len or len(ids) + 1) - 1)
        if model_len:
            window = min(window, model_len - 1)
        if len(ids) <= window:
            pieces, entries, got = await self._kept_window(ids)
            spans = align(pieces, text, special=backend.is_special)
            return TextScores([self._token_score(i, p, e, t, s) for i, (p, e, t, s)
                               in enumerate(zip(pieces, entries, got, spans))], False, 0)
        lead = await self._lead_ids()
        lead = lead if ids[: len(lead)] == lead else []
        scores: list[TokenScore | None] = [None] * len(ids)
        spans: list[tuple[int, int] | None] = [None] * len(ids)
        # the local lens's windows (windows.sliding_spans), without a last window of its own
        for begin, end in sliding_spans(len(ids), window, len(lead), stride, last_start=len(ids))[0]:
            prompt = ids[:end] if begin == 0 else lead + ids[begin:end]
            pieces, entries, _ = await self._kept_window(prompt)
            skip = 0 if begin == 0 else len(lead)
            start_char = 0 if begin == 0 else spans[begin][0]
            window_spans = align(pieces[skip:], text, start_char, special=backend.is_special)
            for q, span in enumerate(window_spans):
                t = begin + q
                if spans[t] is None:
                    spans[t] = span
                if scores[t] is None and (begin == 0 or q > 0):
                    scores[t] = self._token_score(t, pieces[skip + q], entries[skip + q], ids[t], spans[t])
        return TextScores([s for s in scores if s is not None], True, 0)

    async def _kept_window(self, prompt: list[int]) -> tuple[list[str], list[Any], list[int]]:
        key = tuple(prompt)
        kept = self._windows.pop(key, None)
        if kept is None:
            kept = await self._score(list(prompt))
        self._windows[key] = kept
        while len(self._windows) > KEPT_WINDOWS:
            self._windows.popitem(last=False)
        return kept

    def forget_all(self) -> None:
        self._windows.clear()
