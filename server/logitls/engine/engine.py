"""The engine's API: next tokens (raw and healed), per-token scores, greedy decoding and what the
branch and compare features build on, for one loaded model.

A request re-tokenizes the text (cheap, and it handles BPE merges that change near an edit), takes
the window every feature shares (windows.py), and brings the document's KV slot to it (documents.py):
the prefix the slot already holds is kept and only the rest is fed. Prefill, chunks and a decode step
are the same call, `Model.forward(tokens, cache, logits_to_keep)`, on the native model (llama.py) or
on transformers' (transformers_model.py).

An Engine is not thread-safe: the server calls it from one dedicated worker thread.
"""

from __future__ import annotations

import logging
import math
from array import array
from bisect import bisect_right
from typing import Any, Callable, Iterator

import torch

from . import windows
from .documents import PREFILL_CHUNK, DocumentSlots, DocumentState, StopCheck, feed
from .healing import MAX_BACKOFF, backoff
from .loading import LoadedModel, load_model
from .sampling import SamplingParams
from .scoring import PositionScore
from .tail_tokens import Tail, TailTokenizer
from .types import LOCAL, Cancelled, GreedyStep  # noqa: F401 - Cancelled, GreedyStep: re-exported
from .types import (HealedChoice, HealedTokens, NextTokens, TextScores, Token, TokenChoice, TokenizedText,
                    TokenScore)
from .vocabulary import Vocabulary

logger = logging.getLogger("logitls.engine")
# Background passes (the lens) use small chunks: a keystroke waits at most one of them. On CPU a
# 32-token forward costs about as much as a 1-token step (both read all weights once).
BACKGROUND_CHUNK = 32
# Window tokens every feature leaves free for generation (at most a quarter window): the server's
# larger default generation length, so inline completion and generate reuse completion's window.
GENERATION_RESERVE = 100


def hover_slot(document: str) -> str:
    """The slot of a long document's hover window (token_score_at), beside the document's own."""
    return f"{document}\0hover"


class Engine:
    capabilities = LOCAL  # the Backend protocol (types.Backend): everything, exact

    def __init__(self, loaded: LoadedModel, *, max_context_tokens: int = 0, alternatives: int = 10,
                 cached_documents: int = 8, generation_reserve: int = GENERATION_RESERVE,
                 static_decode: bool | None = None) -> None:
        self.loaded = loaded
        self.model = loaded.model  # the Model interface: forward(tokens, cache, logits_to_keep), new_cache()
        self.tokenizer = loaded.tokenizer
        self.device = torch.device(self.model.device)
        self.model_context = self.model.context_length
        self.vocab_size = self.model.vocab_size
        self.vocabulary = Vocabulary(self.tokenizer, self.vocab_size, self.model.eos_token_ids, self.device)
        self.eos_ids = self.vocabulary.eos_ids
        self.start_id = self.vocabulary.start_id
        self._documents = DocumentSlots(cached_documents)
        self._tails = TailTokenizer(self.vocabulary)
        self._hovered: tuple | None = None  # (key, ids, starts, ends) of the last text token_score_at tokenized
        self.score_prefill = False
        self.generation_reserve = generation_reserve
        # Greedy decoding on a GPU: the native model's step on a static cache as a CUDA graph.
        # `static_decode=True` elsewhere runs the same path uncompiled (the tests do, on CPU).
        self.static_decoder = None
        if hasattr(self.model, "new_cache") and loaded.forward == "native" and \
                (static_decode or (static_decode is None and self.device.type == "cuda")):
            from .llama import StaticDecoder

            self.static_decoder = StaticDecoder(self.model, compile=self.device.type == "cuda")
        self.configure(max_context_tokens=max_context_tokens, alternatives=alternatives,
                       cached_documents=cached_documents)

    def configure(self, *, max_context_tokens: int, alternatives: int, cached_documents: int,
                  score_prefill: bool | None = None, generation_reserve: int | None = None) -> None:
        """Settings that apply without reloading the model.

        `score_prefill`: score every token next_tokens feeds, not only the last. A cold prefill costs
        more, but a whole-document pass (the lens) sharing the document's cache then never has
        to re-feed what completion fed, and never crops the cache out from under the next keystroke.

        `generation_reserve`: window tokens that every feature leaves free for greedy generation
        (capped at a quarter window), see `text_window`. A caller whose generations are longer
        than this still gets them, from a window cut further, that shares no cache with the others.
        """
        if score_prefill is not None:
            self.score_prefill = score_prefill
        if generation_reserve is not None:
            self.generation_reserve = max(0, generation_reserve)
        window = min(self.model_context, max_context_tokens) if max_context_tokens > 0 else self.model_context
        if window != getattr(self, "context_window", window) or alternatives != getattr(self, "alternatives", alternatives):
            self._documents.clear()  # cached windows and stored alternatives no longer match
        self.context_window = window
        self.alternatives = alternatives
        self._documents.resize(cached_documents)

    @classmethod
    def load(cls, spec: str | None = None, *, dtype: str = "float32", device: str = "auto", threads: int = 0,
             trust_remote_code: bool = False, weights: str = "auto", kernel: str | None = None,
             forward: str = "auto", **engine_options: Any) -> "Engine":
        loaded = load_model(spec, dtype=dtype, device=device, threads=threads, trust_remote_code=trust_remote_code,
                            weights=weights, kernel=kernel, forward=forward)
        return cls(loaded, **engine_options)

    # -- tokens ---------------------------------------------------------------------------

    def token(self, token_id: int) -> Token:
        return self.vocabulary.token(token_id)

    def tokenize(self, text: str) -> TokenizedText:
        """The ids the model is fed for `text` (with the tokenizer's own special tokens), with offsets."""
        ids, offsets = self.vocabulary.encode(text)
        return TokenizedText(ids, [self.token(i) for i in ids], offsets)

    def token_count(self, text: str) -> int:
        return len(self.vocabulary.encode(text)[0])

    @property
    def text_window(self) -> int:
        """The most tokens of a document any feature keeps: the context window less the generation reserve."""
        return self.context_window - min(self.generation_reserve, self.context_window // 4)

    def _window_start(self, n_tokens: int, room: int | None = None, lead: int = 0) -> int:
        return windows.window_start(n_tokens, self.text_window, room, lead)

    def _lead(self, ids: list[int]) -> int:
        return windows.lead_length(ids, self.vocabulary.lead_ids)

    def _tail(self, text: str, document: str) -> Tail:
        """The end of `text`'s tokenization that any window needs (tail_tokens.py): a long document is
        tokenized whole only on its first request."""
        return self._tails.tail(text, document, self.text_window)

    def _cut(self, text: str, document: str, new_tokens: int = 0,
             tail: Tail | None = None) -> tuple[list[int], list[tuple[int, int]], int, int]:
        """The window of `text` that is fed, with room for `new_tokens` generated tokens after it: its
        ids and offsets, where it starts in the text's tokens (0: it is not cut) and how many of its
        first tokens are the tokenizer's lead."""
        tail = tail or self._tail(text, document)
        n, lead = tail.total, tail.lead
        start = self._window_start(n, lead=lead)
        if (lead + n - start if start > 0 else n) + new_tokens > self.context_window:  # past the reserve: cut further
            start = self._window_start(n, self.context_window - new_tokens, lead)
        if start < tail.first:  # not in the tail (never with a window's worth of tokens): all of them
            ids, offsets = self.vocabulary.encode(text)
            return self._cut(text, document, new_tokens, Tail(ids, offsets, 0, self._lead(ids)))
        if tail.first == 0:
            return windows.cut(tail.ids, start, lead), windows.cut(tail.offsets, start, lead), start, lead
        at = start - tail.first
        return [*self.vocabulary.lead_ids[:lead], *tail.ids[at:]], [(0, 0)] * lead + tail.offsets[at:], start, lead

    def _prepare(self, text: str, new_tokens: int = 0, document: str = "",
                 tail: Tail | None = None) -> tuple[list[int], int, bool]:
        """The window of `text` that is fed, with room for `new_tokens` generated tokens after it."""
        if not text:
            return [self.start_id], 0, False
        ids, _, start, _ = self._cut(text, document, new_tokens, tail)
        if not ids:
            return [self.start_id], 0, False
        return ids, start, start > 0

    # -- documents ---------------------------------------------------------------------------

    @property
    def cached_documents(self) -> int:
        return self._documents.limit

    def _state(self, document: str) -> DocumentState:
        return self._documents.get(document)

    def forget(self, document: str) -> None:
        self._documents.forget(document)
        self._documents.forget(hover_slot(document))
        self._tails.forget(document)
        if self._hovered is not None and self._hovered[0][0] == document:
            self._hovered = None

    def forget_all(self) -> None:
        self._documents.clear()
        self._tails = TailTokenizer(self.vocabulary)
        self._hovered = None

    def cached_documents_keys(self) -> list[str]:
        """The documents whose KV cache is held, least recently used first."""
        return self._documents.keys()

    def _feed(self, state: DocumentState, ids: list[int], want_scores: bool, should_stop: StopCheck | None,
              **options: Any) -> None:
        feed(self.model, state, ids, want_scores=want_scores, alternatives=self.alternatives,
             should_stop=should_stop, **options)

    # -- what callers ask for ---------------------------------------------------------------

    def next_tokens(self, text: str, n: int = 10, *, document: str = "", should_stop: StopCheck | None = None) -> NextTokens:
        """The top-n next tokens after `text`, softmax over the full vocabulary in fp32.

        The empty text conditions on the model's BOS token (EOS for GPT-2 style models).
        """
        if not 1 <= n <= self.vocab_size:
            raise ValueError(f"n must be between 1 and the vocabulary size ({self.vocab_size}), got {n}")
        ids, _, truncated = self._prepare(text, document=document)
        state = self._state(document)
        self._feed(state, ids, False, should_stop, score_bulk=self.score_prefill)
        logprobs = torch.log_softmax(state.last_logits, dim=-1)
        top_logprobs, top_ids = logprobs.topk(n)
        choices = [TokenChoice(self.token(i), math.exp(lp), lp, rank)
                   for rank, (i, lp) in enumerate(zip(top_ids.tolist(), top_logprobs.tolist()), start=1)]
        return NextTokens(choices, len(ids), truncated)

    def healed_next_tokens(self, text: str, n: int = 10, *, document: str = "",
                           should_stop: StopCheck | None = None) -> HealedTokens:
        """The top-n completions of what was typed: token healing at the end of `text` (see healing.py).

        Falls back to the raw next tokens (healed=False) where nothing can be backed off (an empty
        text, a single token) or no token continues the typed fragment.
        """
        if not 1 <= n <= self.vocab_size:
            raise ValueError(f"n must be between 1 and the vocabulary size ({self.vocab_size}), got {n}")
        ids, _, truncated = self._prepare(text, document=document)
        # Only the last tokens can be backed off: look up those, not the whole window, on every keystroke.
        tail = [self.token(i) for i in ids[-(MAX_BACKOFF + 1):]]
        k = backoff([t.text for t in tail], [t.special for t in tail], text) if text else 0
        base = len(ids) - k
        backed_off = tail[len(tail) - k:]  # the fragment's tokens, as written
        state = self._state(document)
        self._feed(state, ids, False, should_stop, score_bulk=self.score_prefill, logits_from=base - 1)
        fragment = "".join(t.text for t in backed_off)
        index = self.vocabulary.index()
        best: dict[str, tuple[float, float, list[Token], bool]] = {}  # new_text -> the likeliest path spelling it
        mass, path_logprob, extended = 0.0, 0.0, False
        with torch.inference_mode():
            for j in range(k + 1):
                logprobs = torch.log_softmax(state.tail[base - 1 + j], dim=-1)
                written = backed_off[:j]
                consumed = "".join(t.text for t in written)
                if j < k:
                    lo, hi = index.starting_with(fragment[len(consumed):])
                    if hi > lo:
                        extended = True
                        matched = logprobs[index.ids_tensor[lo:hi]]
                        mass += math.exp(path_logprob) * float(matched.exp().sum())
                        top = matched.topk(min(n, hi - lo))
                        for lp, at in zip(top.values.tolist(), top.indices.tolist()):
                            token = self.token(index.ids[lo + at])
                            self._keep_best(best, consumed + token.text, path_logprob + lp, lp, written + [token], True)
                    path_logprob += float(logprobs[ids[base + j]])
                else:
                    mass += math.exp(path_logprob)
                    top = logprobs.topk(min(n + 16, self.vocab_size))  # spare: special and partial are skipped
                    for lp, token_id in zip(top.values.tolist(), top.indices.tolist()):
                        token = self.token(token_id)
                        if not (token.special or token.partial or not token.text):
                            self._keep_best(best, fragment + token.text, path_logprob + lp, lp, written + [token],
                                            False)
        if k and not extended:  # nothing continues what was typed: the raw next tokens, said as such
            best = {new_text: (step, step, path, False) for new_text, (_, step, path, _) in best.items()}
            mass = 1.0
        ranked = sorted(best.items(), key=lambda item: -item[1][0])[:n]
        choices = [HealedChoice(new_text, path, math.exp(lp), lp, math.exp(step), math.exp(lp) / mass if mass else 0.0,
                                rank, extends)
                   for rank, (new_text, (lp, step, path, extends)) in enumerate(ranked, start=1)]
        return HealedTokens(len(text) - len(fragment), fragment, choices, mass, bool(k) and extended,
                            len(ids), truncated)

    @staticmethod
    def _keep_best(best: dict, new_text: str, logprob: float, step_logprob: float, path: list[Token],
                   extends: bool) -> None:
        if new_text not in best or best[new_text][0] < logprob:
            best[new_text] = (logprob, step_logprob, path, extends)

    def healed_greedy(self, text: str, *, max_new_tokens: int = 100, document: str = "",
                      should_stop: StopCheck | None = None,
                      sampling: SamplingParams | None = None) -> Iterator[GreedyStep]:
        """Greedy continuation after token healing: the first step completes what was typed (its text
        is what goes after the cursor), then greedy decoding goes on from the healed text. With
        `sampling`, the healed first step is still the likeliest; the steps after it are sampled."""
        if max_new_tokens <= 0:
            return
        healed = self.healed_next_tokens(text, 1, document=document, should_stop=should_stop)
        if not healed.healed:
            yield from self.greedy(text, max_new_tokens=max_new_tokens, document=document, should_stop=should_stop,
                                   sampling=sampling)
            return
        first = healed.choices[0]
        yield GreedyStep(first.tokens[-1], first.new_text[len(healed.fragment):])
        if max_new_tokens > 1 and first.tokens[-1].id not in self.eos_ids:
            yield from self.greedy(text[: healed.fragment_start] + first.new_text, max_new_tokens=max_new_tokens - 1,
                                   document=document, should_stop=should_stop, sampling=sampling)

    def token_scores(self, text: str, *, document: str = "", should_stop: StopCheck | None = None) -> TextScores:
        """Each token's probability given all text before it, its rank and the model's alternatives.

        The first token of the scored window has no score unless the tokenizer itself adds a BOS.
        """
        ids, offsets, start, lead = self._cut(text, document) if text else ([], [], 0, 0)
        if not ids:
            return TextScores([], False, 0)
        state = self._state(document)
        self._feed(state, ids, True, should_stop)
        return TextScores(self._scored_tokens(ids, offsets, state.scores), start > 0,
                          offsets[lead][0] if start > 0 else 0)

    def token_score_at(self, text: str, offset: int, *, document: str = "",
                       should_stop: StopCheck | None = None) -> TokenScore | None:
        """The scored token whose characters hold `offset` (hover), or None: one token's score costs
        at most one window's prefill, never the whole document's.

        A document that fits the text window is scored in its own slot, as document_scores does (the
        same numbers, sharing the cache). A longer one: the window that ends at that token, starting on
        the quarter-window grid of windows.window_start, in the document's hover slot, fed in small
        chunks (BACKGROUND_CHUNK) so that a caller can yield between them. Hovers over nearby tokens
        share that window: one further along feeds only the tokens in between, one before reads the
        scores already there."""
        ids, starts, ends = self._hover_encoding(text, document)
        index = self._holding(starts, ends, offset)
        if index is None:
            return None
        if len(ids) <= self.text_window:
            scores = self._window_scores(self._state(document), list(ids), should_stop, BACKGROUND_CHUNK)
            return self._token_score(index, ids[index], (starts[index], ends[index]), scores[index])
        lead = self._lead(ids)
        start = self._window_start(index + 1, lead=lead)
        window = list(ids[:lead]) + list(ids[start: index + 1]) if start > 0 else list(ids[: index + 1])
        state = self._state(hover_slot(document))
        position = len(window) - 1
        if state.ids[: len(window)] != window or position >= len(state.scores) or state.scores[position] is None:
            self._feed(state, window, True, should_stop, chunk_size=BACKGROUND_CHUNK)
        score = state.scores[position] if position < len(state.scores) else None
        return self._token_score(index, ids[index], (starts[index], ends[index]), score)

    def _hover_encoding(self, text: str, document: str) -> tuple[array, array, array]:
        """`text`'s token ids and their start and end offsets, kept for the last text hovered: hovers on
        one version of a long document tokenize it once (compact arrays: 24 bytes a token)."""
        key = (document, len(text), hash(text))
        if self._hovered is None or self._hovered[0] != key:
            self._hovered = None  # the old arrays go before the new ones are made
            ids, offsets = self.vocabulary.encode(text)
            self._hovered = (key, array("q", ids), array("q", [b for b, _ in offsets]),
                             array("q", [e for _, e in offsets]))
        return self._hovered[1:]

    @staticmethod
    def _holding(starts: array, ends: array, offset: int) -> int | None:
        """The first token whose characters hold `offset` (TextScores.token_at); the byte pieces of
        one character share its span."""
        last = bisect_right(starts, offset) - 1
        holders = [i for i in range(max(0, last - 8), last + 1) if starts[i] <= offset < ends[i]]
        return holders[0] if holders else None

    def document_scores(self, text: str, *, stride: int | None = None, document: str = "",
                        should_stop: StopCheck | None = None, chunk_size: int = PREFILL_CHUNK) -> TextScores:
        """Every token of a document scored given all text before it, within the context window.

        A document longer than the window is scored with sliding windows (windows.sliding_spans): every
        token after the first sees at least `context_window - stride` tokens of context. A window that
        does not start the text starts with the tokenizer's BOS all the same, if it adds one.

        The last window is the one every feature uses, so it shares the document's KV cache; the
        earlier windows end where it takes over. An edit there changes none of them, and their scores
        are kept with the document, by their tokens: asking again (hover after the lens, a keystroke at
        the end) computes none of them again.
        """
        ids, offsets = self.vocabulary.encode(text)
        lead = self._lead(ids)
        last_start = self._window_start(len(ids), lead=lead)
        spans, _ = windows.sliding_spans(len(ids), self.context_window, lead, stride, last_start)
        state = self._state(document)
        keys = [tuple(windows.cut(ids[:end], begin, lead)) for begin, end in spans]
        state.earlier_windows = {key: state.earlier_windows[key] for key in keys if key in state.earlier_windows}
        scores: list[PositionScore | None] = []

        def take(window_scores: list[PositionScore | None], begin: int) -> None:
            # window position `lead + k` holds text token `begin + k` (in the first window, position k)
            scores.extend(window_scores[len(scores) - begin + (lead if begin > 0 else 0):])

        for (begin, _), key in zip(spans, keys):
            window_scores = state.earlier_windows.get(key)
            if window_scores is None:
                window_scores = self._window_scores(DocumentState(), list(key), should_stop, chunk_size)
                state.earlier_windows[key] = window_scores
            take(window_scores, begin)
        take(self._window_scores(state, windows.cut(ids, last_start, lead), should_stop, chunk_size), last_start)
        return TextScores(self._scored_tokens(ids, offsets, scores), last_start > 0, 0)

    def _window_scores(self, state: DocumentState, ids: list[int], should_stop: StopCheck | None,
                       chunk_size: int) -> list[PositionScore | None]:
        self._feed(state, ids, True, should_stop, chunk_size=chunk_size)
        return state.scores[: len(ids)] + [None] * max(0, len(ids) - len(state.scores))

    def _scored_tokens(self, ids: list[int], offsets: list[tuple[int, int]],
                       scores: list[PositionScore | None]) -> list[TokenScore]:
        return [self._token_score(index, token_id, offsets[index], scores[index] if index < len(scores) else None)
                for index, token_id in enumerate(ids)]

    def _token_score(self, index: int, token_id: int, offsets: tuple[int, int],
                     score: PositionScore | None) -> TokenScore:
        begin, end = offsets
        if score is None:
            return TokenScore(index, self.token(token_id), begin, end, None, None, None)
        alternatives = [TokenChoice(self.token(i), math.exp(lp), lp, rank)
                        for rank, (i, lp) in enumerate(score.alternatives, start=1)]
        return TokenScore(index, self.token(token_id), begin, end, math.exp(score.logprob), score.logprob,
                          score.rank, alternatives, score.entropy_bits, score.margin)

    def greedy(
        self,
        text: str,
        *,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        document: str = "",
        should_stop: StopCheck | None = None,
        sampling: SamplingParams | None = None,
    ) -> Iterator[GreedyStep]:
        """Greedy continuation, one step per token, identical to model.generate(do_sample=False).

        As in generate(), max_new_tokens wins over max_length (which counts the prompt too);
        with neither, 100 new tokens. Stops after an EOS token (yielded, with empty text).
        With `sampling` (not greedy), each token is drawn from the distribution after the samplers
        (sampling.py) with a torch.Generator seeded from `sampling.seed`: the same seed, text and
        model give the same tokens.
        """
        for name, value in (("max_new_tokens", max_new_tokens), ("max_length", max_length)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        tail = self._tail(text, document) if text else None
        prompt_tokens = (tail.total if tail else 0) or 1
        if max_new_tokens is None:
            max_new_tokens = max(0, max_length - prompt_tokens) if max_length is not None else 100
        if max_new_tokens == 0:
            return
        ids, _, _ = self._prepare(text, new_tokens=max_new_tokens, document=document, tail=tail)
        state = self._state(document)
        self._feed(state, ids, False, should_stop)
        generated: list[int] = []
        emitted = ""
        chosen = (self._sampled_ids(state, ids, max_new_tokens, should_stop, sampling)
                  if sampling is not None and not sampling.greedy
                  else self._greedy_ids(state, ids, max_new_tokens, should_stop))
        for step, next_id in enumerate(chosen):
            generated.append(next_id)
            decoded = self.vocabulary.decode(generated)
            # Hold back an incomplete multi-byte character until its last byte arrives.
            delta = "" if decoded.endswith("\ufffd") else decoded[len(emitted):]
            emitted += delta
            is_last = next_id in self.eos_ids or step == max_new_tokens - 1 or len(ids) + step + 1 >= self.model_context
            if is_last and decoded != emitted and decoded.startswith(emitted):
                delta += decoded[len(emitted):]
                emitted = decoded
            yield GreedyStep(self.token(next_id), delta)
            if is_last:
                return

    def _greedy_ids(self, state: DocumentState, prompt: list[int], max_new_tokens: int,
                    should_stop: StopCheck | None) -> Iterator[int]:
        """Greedy decoding on `state` (fed up to `prompt`): yield the best next token, feed it, and again;
        at most `max_new_tokens`, within the context. Stops when the caller stops asking (EOS, length)."""
        limit = min(max_new_tokens, self.model_context - len(prompt))
        if self.static_decoder is not None:
            return self.static_decoder.greedy_ids(state.kv, state.last_logits, limit, should_stop)
        return self._decode_ids(state, limit, should_stop, lambda logits: int(torch.argmax(logits)))

    def _sampled_ids(self, state: DocumentState, prompt: list[int], max_new_tokens: int,
                     should_stop: StopCheck | None, sampling: SamplingParams) -> Iterator[int]:
        """As _greedy_ids, each token drawn after the samplers (never the static decoder: it only takes argmax)."""
        generator = sampling.generator(state.last_logits.device)
        return self._decode_ids(state, min(max_new_tokens, self.model_context - len(prompt)), should_stop,
                                lambda logits: sampling.draw(logits, generator))

    @torch.inference_mode()
    def _decode_ids(self, state: DocumentState, limit: int, should_stop: StopCheck | None,
                    choose: Callable[[torch.Tensor], int]) -> Iterator[int]:
        """One token per step: `choose` from the next-token logits, yield it, feed it; `limit` at most."""
        for step in range(limit):
            next_id = choose(state.last_logits)
            yield next_id
            if step == limit - 1:
                return
            if should_stop is not None and should_stop():
                raise Cancelled()
            state.append_step(next_id, self.model.forward([next_id], state.kv, 1)[-1])

    def sample(self, text: str, *, params: SamplingParams, max_new_tokens: int | None = None, document: str = "",
               should_stop: StopCheck | None = None) -> Iterator[GreedyStep]:
        """A sampled continuation (greedy where `params` is greedy): `greedy(..., sampling=params)`."""
        return self.greedy(text, max_new_tokens=max_new_tokens, document=document, should_stop=should_stop,
                           sampling=params)

    def next_tokens_sampled(self, text: str, params: SamplingParams, n: int = 10, *, document: str = "",
                            should_stop: StopCheck | None = None) -> tuple[NextTokens, list[float]]:
        """next_tokens (the model's own p, unchanged) and, for each choice, its probability after the
        samplers (0 where they cut it)."""
        result = self.next_tokens(text, n, document=document, should_stop=should_stop)
        after = params.apply(self._state(document).last_logits)
        return result, [float(after[c.id]) for c in result.choices]

    def layers(self, text: str, position: int | None = None, *, document: str = ""):
        """The logit lens (layers.py) at token `position` of the tokens the model sees for `text` (its
        window, the tokenizer's BOS included; default the last): per layer, what the model would predict
        next if it stopped there. The last row is the model's own logits for that position (for the last
        position, exactly next_tokens')."""
        from .layers import lens

        ids, _, _ = self._prepare(text, document=document)
        if position is None:
            position = len(ids) - 1
        if not 0 <= position < len(ids):
            raise ValueError(f"position must be from 0 to {len(ids) - 1} (the text's {len(ids)} tokens), got {position}")
        state = self._state(document)
        self._feed(state, ids[: position + 1], False, None, score_bulk=self.score_prefill)
        return lens(self, ids[: position + 2], position, state.last_logits)

    def generate_text(self, text: str, **options: Any) -> str:
        return "".join(step.text for step in self.greedy(text, **options))
