"""The inference core: next-token distribution, per-token scores and greedy decoding.

Everything runs through one per-document KV cache (DocumentState): a request re-tokenizes the
whole text (cheap, and it handles BPE merges that change near an edit), keeps the cached
prefix it shares with the previous request, and feeds only the rest. Prefill and decode are the
same forward call: prefill feeds many tokens, a decode step feeds one.

An Engine is not thread-safe: the server calls it from one dedicated worker thread.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from .healing import MAX_BACKOFF, VocabularyIndex, backoff
from .growable_cache import can_crop, crop_cache, new_document_cache
from .loading import LoadedModel, load_lean_model, load_model
from .types import LOCAL, Cancelled, GreedyStep  # noqa: F401 - Cancelled, GreedyStep: re-exported
from .types import (HealedChoice, HealedTokens, NextTokens, TextScores, Token, TokenChoice, TokenizedText,
                    TokenScore)

StopCheck = Callable[[], bool]
logger = logging.getLogger("logitls.engine")
PREFILL_CHUNK = 256  # tokens per forward during prefill: bounds logits memory and cancel latency
# Background passes (the lens) use small chunks: a keystroke waits at most one of them. On CPU a
# 32-token forward costs about as much as a 1-token step (both read all weights once).
BACKGROUND_CHUNK = 32
BULK_TOKENS = 16  # more new tokens than this make a feed a prefill (see score_bulk)
# Scoring needs every position's full-vocabulary logits: 128 positions are 25 MB (SmolLM2, fp32)
# per tensor, and log-softmax, ranks and top-k make a few of them. Measured on a 2000-token prefill:
# chunks of 256 peak ~250 MB above the weights and KV cache, 128 ~120 MB for 9% more time.
SCORING_CHUNK = 128
# Window tokens every feature leaves free for generation (at most a quarter window): the server's
# larger default generation length, so inline completion and generate reuse completion's window.
GENERATION_RESERVE = 100
# Positions whose next-token logits a document keeps (DocumentState.tail): token healing backs off at
# most TAIL_LOGITS - 1 tokens. Four rows of the LM head cost what one does on CPU (the weights are read once).
TAIL_LOGITS = 4
# A few tokens of code: what the lean step, and a lean stand-in against transformers' model, are checked on.
PROBE_TEXT = "def main():\n    return 0"
# What a stand-in's tokenizer is checked on besides: prose, Unicode (offsets count characters), blanks,
# special tokens written in the text
TOKENIZER_PROBES = ["The capital of France is Paris.", "héllo wörld 😀 \u00e9t\u00e9\n\tx = [1, 2]  # ok",
                    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>", "  two leading spaces\n\n\n", "a"]


@dataclass
class _Score:
    logprob: float
    rank: int
    alternatives: list[tuple[int, float]]  # (token id, logprob), best first
    entropy_bits: float | None = None  # of the whole next-token distribution at this position
    margin: float | None = None  # p(top token) - p(second token)


@dataclass
class DocumentState:
    """The model's view of one document: token ids whose keys/values sit in `kv`."""

    ids: list[int] = field(default_factory=list)
    kv: Any = None
    # scores[i]: token i given ids[:i], or None / missing where tokens were fed without scoring.
    scores: list[_Score | None] = field(default_factory=list)
    last_logits: torch.Tensor | None = None  # next-token logits after ids, fp32
    # tail[p]: next-token logits after ids[:p + 1], for the last few positions fed (TAIL_LOGITS). Token
    # healing reads the distributions before the word at the cursor from here, and a backspace within
    # them needs no forward pass at all.
    tail: dict[int, torch.Tensor] = field(default_factory=dict)
    # The scores of document_scores' windows before the last one, by their token ids: hover and the
    # lens ask for the same text, and an edit near the end changes none of them.
    earlier_windows: dict[tuple[int, ...], list[_Score | None]] = field(default_factory=dict)

    def crop(self, keep: int) -> None:
        """Keep the first `keep` positions; or none, where the cache cannot be cropped (a sliding-window
        layer has dropped positions that the kept prefix needs): then everything is fed again."""
        if keep >= len(self.ids):
            return
        if keep == 0 or self.kv is None or not crop_cache(self.kv, len(self.ids) - keep):
            self.kv = None
            keep = 0
        del self.ids[keep:]  # scores stay: _advance already dropped those of changed tokens
        for position in [p for p in self.tail if p >= keep]:
            del self.tail[position]
        self.last_logits = self.tail.get(keep - 1)

    def can_crop(self, keep: int) -> bool:
        return self.kv is None or keep == 0 or can_crop(self.kv, len(self.ids) - keep)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Engine:
    capabilities = LOCAL  # the Backend protocol (types.Backend): everything, exact

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_context_tokens: int = 0,
        alternatives: int = 10,
        cached_documents: int = 8,
        static_decode: bool | None = None,
        lean_step: bool | None = None,
        generation_reserve: int = GENERATION_RESERVE,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = torch.device(loaded.device)
        self._documents: OrderedDict[str, DocumentState] = OrderedDict()
        self._token_cache: dict[int, Token] = {}
        self._vocabulary_index: VocabularyIndex | None = None
        config = self.model.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        self.model_context = int(limit)
        self.score_prefill = False
        self.generation_reserve = generation_reserve
        self.configure(max_context_tokens=max_context_tokens, alternatives=alternatives,
                       cached_documents=cached_documents)
        self._lean_step_option = lean_step
        self.static_decoders = None
        if static_decode or (static_decode is None and self.device.type == "cuda"):
            from .static_decode import StaticDecoders

            self.static_decoders = StaticDecoders(self.model, self.model_context,
                                                  compile_step=self.device.type == "cuda")
        self._set_lean_step()
        self.vocab_size = int(self.model.get_output_embeddings().out_features)
        self._set_tokenizer(self.tokenizer)

    def _set_tokenizer(self, tokenizer: Any) -> None:
        """The tokenizer, and what the engine derives from it."""
        self.tokenizer = tokenizer
        self._token_cache.clear()
        self._vocabulary_index = None
        self._special_ids = set(tokenizer.all_special_ids)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        # What the empty text conditions on: the model's BOS, else its EOS (GPT-2 style models
        # use <|endoftext|> as the document separator).
        start = tokenizer.bos_token_id
        self.start_id = start if start is not None else tokenizer.eos_token_id
        self.lead_ids = self._tokenizer_lead()

    def _set_lean_step(self) -> None:
        """The lean decode step (lean_step.py): on CPU, for the models it mirrors; checked once before use."""
        self.lean_step = None
        self._lean_checked: bool | None = None
        option = self._lean_step_option
        if self.static_decoders is None and (option or (option is None and self.device.type == "cpu")):
            from .lean_step import LeanStep

            if LeanStep.supports(self.model):
                self.lean_step = LeanStep(self.model)

    def configure(self, *, max_context_tokens: int, alternatives: int, cached_documents: int,
                  score_prefill: bool | None = None, generation_reserve: int | None = None) -> None:
        """Settings that apply without reloading the model.

        `score_prefill`: score every token next_tokens feeds, not only the last. A cold prefill costs
        ~40% more, but a whole-document pass (the lens) sharing the document's cache then never has
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
        self.cached_documents = max(1, cached_documents)
        while len(self._documents) > self.cached_documents:
            self._documents.popitem(last=False)

    @classmethod
    def load(cls, spec: str | None = None, *, dtype: str = "float32", device: str = "auto", threads: int = 0,
             trust_remote_code: bool = False, weights: str = "auto", kernel: str | None = None,
             **engine_options: Any) -> "Engine":
        loaded = load_model(spec, dtype=dtype, device=device, threads=threads, trust_remote_code=trust_remote_code,
                            weights=weights, kernel=kernel)
        return cls(loaded, **engine_options)

    @classmethod
    def load_lean(cls, spec: str | None = None, *, dtype: str = "float32", device: str = "auto", threads: int = 0,
                  weights: str = "auto", kernel: str | None = None, **engine_options: Any) -> "Engine | None":
        """An engine on lean_model's transformers-free stand-in, where it can be exactly the model `load`
        gives (else None): it answers ~1.5 s sooner after a process starts, and `adopt` later puts
        transformers' model in its place."""
        loaded = load_lean_model(spec, dtype=dtype, device=device, threads=threads, weights=weights, kernel=kernel)
        return None if loaded is None else cls(loaded, **engine_options)

    def load_transformers_model(self, *, threads: int = 0, weights: str = "auto") -> LoadedModel:
        """transformers' model of the stand-in's folder, for `adopt`; the stand-in's tokenizer goes with it
        where it is transformers' own class (else transformers loads its own, and `adopt` compares)."""
        from .lean_tokenizer import LeanTokenizer

        stand_in = self.loaded
        own = None if isinstance(self.tokenizer, LeanTokenizer) else self.tokenizer
        return load_model(stand_in.name, dtype=stand_in.dtype, device=stand_in.device, threads=threads,
                          weights=weights, tokenizer=own)

    def adopt(self, loaded: LoadedModel) -> bool:
        """Serve with `loaded` (transformers' model of the same folder) in place of the lean stand-in.

        Both models first feed one probe as a document is fed: a prefill on fresh caches, and a chunk
        after positions the stand-in cached, carried over into transformers' cache. With the same
        logits to the bit, and the same tokenization (where transformers loaded a tokenizer of its own), every
        document's cache carries over; on any difference all of them are dropped (fed again on the
        next request) and a warning says so. Returns whether everything agreed."""
        from .growable_cache import LeanCache
        from .kv_cache import from_lean_cache
        from .lean_tokenizer import same_tokenizer

        ids = self.tokenizer(PROBE_TEXT)["input_ids"] or [self.start_id]
        split = max(1, len(ids) - 3)
        first, rest = ids[:split], ids[split:] or ids[-1:]
        theirs = loaded.model

        def feed(model: Any, part: list[int], cache: Any) -> torch.Tensor:
            return model(input_ids=torch.tensor([part], device=self.device), cache=cache, logits_to_keep=0,
                         use_cache=True).logits.float()

        with torch.inference_mode():
            own, handed = new_document_cache(self.model.config), new_document_cache(self.model.config)
            mine = [feed(self.model, first, own), feed(self.model, rest, own)]
            feed(self.model, first, handed)
            handed = from_lean_cache(handed, theirs.config)
            agree = handed is not None and \
                torch.equal(mine[0], feed(theirs, first, new_document_cache(theirs.config))) and \
                torch.equal(mine[1], feed(theirs, rest, handed))
        if loaded.tokenizer is not self.tokenizer and \
                not same_tokenizer(self.tokenizer, loaded.tokenizer, [PROBE_TEXT, *TOKENIZER_PROBES]):
            logger.warning("the lean stand-in's tokenizer differs from transformers': taking transformers'")
            agree = False
        if not agree:
            logger.warning("the lean stand-in's answers differ from transformers' model: dropping the cached "
                           "documents, which are fed again through transformers' model")
            self._documents.clear()
        self.loaded, self.model = loaded, theirs
        if loaded.tokenizer is not self.tokenizer:
            self._set_tokenizer(loaded.tokenizer)
        for state in self._documents.values():  # the stand-in's caches, carried over into transformers'
            if isinstance(state.kv, LeanCache):
                state.kv = from_lean_cache(state.kv, theirs.config)
                if state.kv is None:
                    state.crop(0)
        self._set_lean_step()
        return agree

    # -- tokens ---------------------------------------------------------------------------

    def token(self, token_id: int) -> Token:
        cached = self._token_cache.get(token_id)
        if cached is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            piece = self.tokenizer.convert_ids_to_tokens(token_id) or ""
            if piece.startswith("\u2581") and not text.startswith(" "):
                text = " " + text  # SentencePiece drops the word-start space when a token stands alone
            special = token_id in self._special_ids
            cached = Token(token_id, text, special=special, partial="\ufffd" in text and not special)
            self._token_cache[token_id] = cached
        return cached

    def tokenize(self, text: str) -> TokenizedText:
        """The ids the model is fed for `text` (with the tokenizer's own special tokens), with offsets."""
        ids, offsets = self._encode(text)
        return TokenizedText(ids, [self.token(i) for i in ids], offsets)

    def token_count(self, text: str) -> int:
        return len(self._encode(text)[0])

    def _encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and their character offsets in `text` (none for the empty text)."""
        if not text:
            return [], []
        encoded = self.tokenizer(text, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]

    def _scored_tokens(self, ids: list[int], offsets: list[tuple[int, int]],
                       scores: list[_Score | None]) -> list[TokenScore]:
        return [self._token_score(index, token_id, offsets[index], scores[index] if index < len(scores) else None)
                for index, token_id in enumerate(ids)]

    @property
    def text_window(self) -> int:
        """The most tokens of a document any feature keeps: the context window less the generation reserve."""
        return self.context_window - min(self.generation_reserve, self.context_window // 4)

    def _window_start(self, n_tokens: int, room: int | None = None, lead: int = 0) -> int:
        """Where to cut a too-long token list so that what is left fits in `room` (default `text_window`) tokens.

        One rule for every feature: completion, inline completion, generate and the lens's last window
        cut a document at the same token, so they share its KV cache. The cut moves in blocks of a
        quarter window, so that while a user types at the end of a long document the kept window
        (and its cache) stays the same for many keystrokes; a smaller `room` cuts on the same grid.
        The first `lead` tokens (the tokenizer's BOS) stay in front of what is kept, see `_cut`.
        """
        room = max(lead + 1, self.text_window if room is None else room)
        if n_tokens <= room:
            return 0
        block = max(1, self.text_window // 4)
        start = lead + -(-(n_tokens - room) // block) * block
        return min(start, n_tokens - 1)

    def _tokenizer_lead(self) -> list[int]:
        """The special tokens the tokenizer puts before every text (Llama's BOS): none for GPT-2."""
        marked = list(self.tokenizer("a")["input_ids"])
        plain = list(self.tokenizer("a", add_special_tokens=False)["input_ids"])
        for i in range(len(marked) - len(plain) + 1):
            if marked[i : i + len(plain)] == plain:
                lead = marked[:i]
                return lead if all(t in self._special_ids for t in lead) else []
        return []

    def _lead(self, ids: list[int]) -> int:
        n = len(self.lead_ids)
        return n if n and list(ids[:n]) == self.lead_ids else 0

    @staticmethod
    def _cut(items: list, start: int, lead: int) -> list:
        """items[start:], behind the first `lead` items: a window cut from a text keeps the tokenizer's
        BOS in front, as the model saw every text in training."""
        return list(items[:lead]) + list(items[start:]) if start > 0 else list(items)

    # -- the forward pass over a document state ---------------------------------------------

    def _state(self, document: str) -> DocumentState:
        state = self._documents.pop(document, None) or DocumentState()
        self._documents[document] = state  # most recently used last
        while len(self._documents) > self.cached_documents:
            self._documents.popitem(last=False)
        return state

    def forget(self, document: str) -> None:
        self._documents.pop(document, None)

    def forget_all(self) -> None:
        self._documents.clear()

    def cached_documents_keys(self) -> list[str]:
        """The documents whose KV cache is held, least recently used first."""
        return list(self._documents)

    @torch.inference_mode()
    def _advance(self, state: DocumentState, ids: list[int], want_scores: bool, should_stop: StopCheck | None,
                 chunk_size: int = PREFILL_CHUNK, score_bulk: bool = False, logits_from: int | None = None) -> None:
        """Bring `state` to exactly `ids`, with next-token logits (and, if asked, every token's score).

        `logits_from`: also have state.tail hold the logits of every position from there to the end
        (at most TAIL_LOGITS positions), feeding again what is missing.

        `score_bulk`: score only when many tokens are fed (a prefill). A keystroke then feeds one
        token and leaves its score to the lens: on CPU a 2-token forward costs 1.5x a 1-token one
        (GEMM instead of GEMV), and scoring the changed token would mean re-feeding the one before.
        """
        n = len(ids)
        common = _common_prefix(state.ids, ids)
        del state.scores[common:]  # a score depends only on the tokens up to and including its own
        if score_bulk and n - common > BULK_TOKENS:
            want_scores = True
        if want_scores:
            first_missing = next((i for i in range(1, n) if i >= len(state.scores) or state.scores[i] is None), n)
            # token i is scored by the logits at i - 1; with nothing missing, only new tokens are fed
            start = common if first_missing >= n else min(first_missing - 1, common)
        else:
            start = common
        if logits_from is not None:
            missing = [p for p in range(max(logits_from, 0), n) if p >= common or p not in state.tail]
            if missing:
                start = min(start, missing[0])
        if start >= n:
            if len(state.ids) == n and state.last_logits is not None:
                return
            if n - 1 in state.tail and state.can_crop(n):
                state.crop(n)  # a backspace within the kept logits: nothing to feed
                return
            start = n - 1
        start = max(start, 0)
        if not state.can_crop(start):
            # A sliding-window layer has lost positions the kept prefix needs: everything is fed
            # again, which is a prefill, scored if prefills are.
            start = 0
            want_scores = want_scores or (score_bulk and n > BULK_TOKENS)
        state.crop(start)
        if state.kv is None:
            state.kv = new_document_cache(self.model.config)
        if want_scores:
            chunk_size = min(chunk_size, SCORING_CHUNK)
        position = len(state.ids)
        while position < n:
            if should_stop is not None and should_stop():
                raise Cancelled()
            chunk = ids[position : position + chunk_size]
            if len(chunk) == 1 and self._lean_usable(state, check=False):
                # a keystroke's one token: the lean step gives transformers' logits, ~5 ms sooner
                logits = self.lean_step.step(chunk[0], state.kv)[None]
            else:
                # logits_to_keep skips the LM head for all but the last few positions when no scores are wanted
                output = self.model(
                    input_ids=torch.tensor([chunk], device=self.device),
                    cache=state.kv,
                    logits_to_keep=0 if want_scores else TAIL_LOGITS,
                    use_cache=True,
                )
                logits = output.logits[0].float()  # softmax in fp32 even when the model runs in bf16
            state.ids.extend(chunk)
            kept = min(TAIL_LOGITS, len(chunk))
            for row in range(kept):  # copies: a view would keep the whole chunk's logits alive
                state.tail[position + len(chunk) - kept + row] = logits[logits.shape[0] - kept + row].clone()
            for old_position in [p for p in state.tail if p < position + len(chunk) - TAIL_LOGITS]:
                del state.tail[old_position]
            if want_scores:
                targets = ids[position + 1 : position + 1 + len(chunk)]
                if len(state.scores) < position + 1:
                    state.scores.extend([None] * (position + 1 - len(state.scores)))
                del state.scores[position + 1 :]
                state.scores.extend(self._scores(logits[: len(targets)], targets))
            state.last_logits = state.tail[position + len(chunk) - 1]
            position += len(chunk)

    def _scores(self, logits: torch.Tensor, targets: list[int]) -> list[_Score]:
        if not targets:
            return []
        logprobs = torch.log_softmax(logits, dim=-1)
        target = torch.tensor(targets, device=logprobs.device).unsqueeze(1)
        actual = logprobs.gather(1, target)
        ranks = (logprobs > actual).sum(dim=1) + 1
        entropy = self._entropy_bits(logprobs)
        k = min(self.alternatives, logprobs.shape[-1])
        top_logprobs, top_ids = logprobs.topk(min(max(k, 2), logprobs.shape[-1]), dim=-1)
        top_probs = top_logprobs[:, :2].exp()
        margins = (top_probs[:, 0] - top_probs[:, 1]) if top_probs.shape[1] > 1 else top_probs[:, 0]
        actual_l, ranks_l = actual.squeeze(1).tolist(), ranks.tolist()
        top_ids_l, top_lp_l = top_ids[:, :k].tolist(), top_logprobs[:, :k].tolist()
        entropy_l, margin_l = entropy.tolist(), margins.tolist()
        return [
            _Score(actual_l[i], ranks_l[i], list(zip(top_ids_l[i], top_lp_l[i])), entropy_l[i], margin_l[i])
            for i in range(len(targets))
        ]

    @staticmethod
    def _entropy_bits(logprobs: torch.Tensor) -> torch.Tensor:
        """Entropy (bits) of each row's distribution: -sum p ln p as one batched dot product per row
        (an exp and one reduction over the vocabulary; ~2x cheaper than torch.special.entr). A row
        with a -inf logprob (a masked token) gives 0 * -inf = NaN there: those rows use entr, which
        counts 0 ln 0 as 0."""
        probs = logprobs.exp()
        nats = -torch.bmm(probs.unsqueeze(1), logprobs.unsqueeze(2)).view(-1)
        bad = torch.isnan(nats)
        if bool(bad.any()):
            nats[bad] = torch.special.entr(probs[bad]).sum(dim=-1)
        return nats / math.log(2)

    def _prepare(self, text: str, new_tokens: int = 0) -> tuple[list[int], int, bool]:
        """The window of `text` that is fed, with room for `new_tokens` generated tokens after it."""
        ids = self.tokenizer(text)["input_ids"] if text else []
        if not ids:
            return [self.start_id], 0, False
        lead = self._lead(ids)
        start = self._window_start(len(ids), lead=lead)
        if len(self._cut(ids, start, lead)) + new_tokens > self.context_window:  # more than the reserve: cut further
            start = self._window_start(len(ids), self.context_window - new_tokens, lead)
        return self._cut(ids, start, lead), start, start > 0

    # -- the three things callers ask for ---------------------------------------------------

    def next_tokens(self, text: str, n: int = 10, *, document: str = "", should_stop: StopCheck | None = None) -> NextTokens:
        """The top-n next tokens after `text`, softmax over the full vocabulary in fp32.

        The empty text conditions on the model's BOS token (EOS for GPT-2 style models).
        """
        if not 1 <= n <= self.vocab_size:
            raise ValueError(f"n must be between 1 and the vocabulary size ({self.vocab_size}), got {n}")
        ids, _, truncated = self._prepare(text)
        state = self._state(document)
        self._advance(state, ids, want_scores=False, should_stop=should_stop, score_bulk=self.score_prefill)
        logprobs = torch.log_softmax(state.last_logits, dim=-1)
        top_logprobs, top_ids = logprobs.topk(n)
        choices = [
            TokenChoice(self.token(i), math.exp(lp), lp, rank)
            for rank, (i, lp) in enumerate(zip(top_ids.tolist(), top_logprobs.tolist()), start=1)
        ]
        return NextTokens(choices, len(ids), truncated)

    def healed_next_tokens(self, text: str, n: int = 10, *, document: str = "",
                           should_stop: StopCheck | None = None) -> HealedTokens:
        """The top-n completions of what was typed: token healing at the end of `text` (see healing.py).

        Falls back to the raw next tokens (healed=False) where nothing can be backed off (an empty
        text, a single token) or no token continues the typed fragment.
        """
        if not 1 <= n <= self.vocab_size:
            raise ValueError(f"n must be between 1 and the vocabulary size ({self.vocab_size}), got {n}")
        ids, _, truncated = self._prepare(text)
        # Only the last tokens can be backed off: look up those, not the whole window, on every keystroke.
        tail = [self.token(i) for i in ids[-(MAX_BACKOFF + 1):]]
        k = backoff([t.text for t in tail], [t.special for t in tail], text) if text else 0
        base = len(ids) - k
        backed_off = tail[len(tail) - k:]  # the fragment's tokens, as written
        state = self._state(document)
        self._advance(state, ids, want_scores=False, should_stop=should_stop, score_bulk=self.score_prefill,
                      logits_from=base - 1)
        fragment = "".join(t.text for t in backed_off)
        index = self._vocabulary()
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

    def _vocabulary(self) -> VocabularyIndex:
        """Every insertable token's text, sorted for prefix search (built once, ~0.1 s)."""
        if self._vocabulary_index is None:
            known = min(self.vocab_size, len(self.tokenizer))
            texts = self._token_texts(known)
            for i, piece in enumerate(self._token_pieces(known)):
                if piece and piece.startswith("\u2581") and not texts[i].startswith(" "):
                    texts[i] = " " + texts[i]  # as token(): SentencePiece drops a lone token's word-start space
            usable = [i not in self._special_ids and "\ufffd" not in texts[i] for i in range(known)]
            self._vocabulary_index = VocabularyIndex(texts, usable)
            self._vocabulary_index.ids_tensor = torch.tensor(self._vocabulary_index.ids, dtype=torch.long,
                                                             device=self.device)
        return self._vocabulary_index

    def _token_pieces(self, known: int) -> list[str | None]:
        """Every token's vocabulary entry: from the Rust tokenizer's vocabulary in one call where it has
        one (convert_ids_to_tokens asks for each id in turn: ~0.3 s for 49k tokens)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return self.tokenizer.convert_ids_to_tokens(list(range(known)))
        pieces: list[str | None] = [None] * known
        for piece, token_id in backend.get_vocab(with_added_tokens=True).items():
            if token_id < known:
                pieces[token_id] = piece
        return pieces

    def _token_texts(self, known: int) -> list[str]:
        """Every token's text alone. transformers' batch_decode costs ~0.6 s for 49k tokens, most of it
        Python around the Rust decoder: the first healed menu waited on it. The Rust tokenizer's own
        decode_batch gives the same texts in ~0.08 s; where a sample disagrees, batch_decode it is."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            try:
                texts = backend.decode_batch([[i] for i in range(known)], skip_special_tokens=False)
                sample = range(0, known, max(1, known // 64))
                slow = self.tokenizer.batch_decode([[i] for i in sample], skip_special_tokens=False,
                                                   clean_up_tokenization_spaces=False)
                if [texts[i] for i in sample] == slow:
                    return texts
            except Exception:  # noqa: BLE001 - an unusual tokenizer: the slow path below
                pass
        return self.tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=False,
                                           clean_up_tokenization_spaces=False)

    def healed_greedy(self, text: str, *, max_new_tokens: int = 100, document: str = "",
                      should_stop: StopCheck | None = None) -> Iterator[GreedyStep]:
        """Greedy continuation after token healing: the first step completes what was typed (its text
        is what goes after the cursor), then greedy decoding goes on from the healed text."""
        if max_new_tokens <= 0:
            return
        healed = self.healed_next_tokens(text, 1, document=document, should_stop=should_stop)
        if not healed.healed:
            yield from self.greedy(text, max_new_tokens=max_new_tokens, document=document, should_stop=should_stop)
            return
        first = healed.choices[0]
        yield GreedyStep(first.tokens[-1], first.new_text[len(healed.fragment):])
        if max_new_tokens > 1 and first.tokens[-1].id not in self.eos_ids:
            yield from self.greedy(text[: healed.fragment_start] + first.new_text, max_new_tokens=max_new_tokens - 1,
                                   document=document, should_stop=should_stop)

    def token_scores(self, text: str, *, document: str = "", should_stop: StopCheck | None = None) -> TextScores:
        """Each token's probability given all text before it, its rank and the model's alternatives.

        The first token of the scored window has no score unless the tokenizer itself adds a BOS.
        """
        all_ids, all_offsets = self._encode(text)
        if not all_ids:
            return TextScores([], False, 0)
        lead = self._lead(all_ids)
        start = self._window_start(len(all_ids), lead=lead)
        ids, offsets = self._cut(all_ids, start, lead), self._cut(all_offsets, start, lead)
        state = self._state(document)
        self._advance(state, ids, want_scores=True, should_stop=should_stop)
        return TextScores(self._scored_tokens(ids, offsets, state.scores), start > 0,
                          all_offsets[start][0] if start > 0 else 0)

    def document_scores(self, text: str, *, stride: int | None = None, document: str = "",
                        should_stop: StopCheck | None = None, chunk_size: int = PREFILL_CHUNK) -> TextScores:
        """Every token of a document scored given all text before it, within the context window.

        A document longer than the window is scored with a sliding window, as in the transformers
        perplexity guide: windows of `context_window` tokens start every `stride` tokens (default
        half a window), and each scores only the tokens the previous windows did not, so every
        token after the first sees at least `context_window - stride` tokens of context. A window
        that does not start the text starts with the tokenizer's BOS all the same, if it adds one.

        The last window is the one every feature uses (see `_window_start`), so it shares the
        document's KV cache; it scores every token that has `context_window - stride` tokens before
        it inside it, and the earlier windows end where it takes over. An edit there changes none
        of them, and their scores are kept with the document, by their tokens: asking again (hover
        after the lens, a keystroke at the end) computes none of them again.
        """
        ids, offsets = self._encode(text)
        window = self.context_window
        lead = self._lead(ids)
        last_start = self._window_start(len(ids), lead=lead)
        body = window - lead  # text tokens in a window that does not start the text
        stride = max(1, min(stride or window // 2, body))
        handover = min(len(ids), last_start + max(1, body - stride)) if last_start > 0 else 0
        spans, covered = [], 0
        for begin in range(0, last_start, stride):
            end = min(begin + (window if begin == 0 else body), handover)
            if end > covered:
                spans.append((begin, end))
                covered = end
        state = self._state(document)
        windows = [tuple(self._cut(ids[:end], begin, lead)) for begin, end in spans]
        state.earlier_windows = {key: state.earlier_windows[key] for key in windows if key in state.earlier_windows}
        scores: list[_Score | None] = []

        def take(window_scores: list[_Score | None], begin: int) -> None:
            # window position `lead + k` holds text token `begin + k` (in the first window, position k)
            scores.extend(window_scores[len(scores) - begin + (lead if begin > 0 else 0):])

        for (begin, _), key in zip(spans, windows):
            window_scores = state.earlier_windows.get(key)
            if window_scores is None:
                window_scores = self._window_scores(DocumentState(), list(key), should_stop, chunk_size)
                state.earlier_windows[key] = window_scores
            take(window_scores, begin)
        take(self._window_scores(state, self._cut(ids, last_start, lead), should_stop, chunk_size), last_start)
        return TextScores(self._scored_tokens(ids, offsets, scores), last_start > 0, 0)

    def _window_scores(self, state: DocumentState, ids: list[int], should_stop: StopCheck | None,
                       chunk_size: int) -> list[_Score | None]:
        self._advance(state, ids, want_scores=True, should_stop=should_stop, chunk_size=chunk_size)
        return state.scores[: len(ids)] + [None] * max(0, len(ids) - len(state.scores))

    def _token_score(self, index: int, token_id: int, offsets: tuple[int, int], score: _Score | None) -> TokenScore:
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
    ) -> Iterator[GreedyStep]:
        """Greedy continuation, one step per token, identical to model.generate(do_sample=False).

        As in generate(), max_new_tokens wins over max_length (which counts the prompt too);
        with neither, 100 new tokens. Stops after an EOS token (yielded, with empty text).
        """
        for name, value in (("max_new_tokens", max_new_tokens), ("max_length", max_length)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        prompt_tokens = len(self.tokenizer(text)["input_ids"]) if text else 1
        if max_new_tokens is None:
            max_new_tokens = max(0, max_length - prompt_tokens) if max_length is not None else 100
        if max_new_tokens == 0:
            return
        ids, _, _ = self._prepare(text, new_tokens=max_new_tokens)
        state = self._state(document)
        self._advance(state, ids, want_scores=False, should_stop=should_stop)
        generated: list[int] = []
        emitted = ""
        for step, next_id in enumerate(self._greedy_ids(state, ids, max_new_tokens, should_stop)):
            generated.append(next_id)
            decoded = self.tokenizer.decode(generated, skip_special_tokens=True, clean_up_tokenization_spaces=False)
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
        """Decode: one token per step. Stops when the caller stops asking (EOS, length)."""
        limit = min(max_new_tokens, self.model_context - len(prompt))
        static = self.static_decoders
        if static is not None and static.enabled:
            # Check the recorded step once against a few eager steps, then trust it.
            probe = [] if static.verified else list(self._eager_greedy_ids(state, min(4, limit), None))
            if static.verify(prompt, probe):
                decoder = static.decoder_for(len(prompt) + limit)
                for next_id in decoder.greedy_ids(prompt, limit, set(), should_stop):
                    yield next_id
                if should_stop is not None and should_stop():
                    raise Cancelled()
                return
            state.crop(len(prompt))
            self._advance(state, prompt, want_scores=False, should_stop=should_stop)
        if self._lean_usable(state):
            yield from self._lean_greedy_ids(state, limit, should_stop)
            return
        yield from self._eager_greedy_ids(state, limit, should_stop)

    @property
    def lean_decoding(self) -> bool | None:
        """Whether decode steps and keystrokes take the lean step: None while it is not yet checked."""
        return False if self.lean_step is None else self._lean_checked

    def check_lean_step(self) -> bool:
        """Check the lean step once, on a few tokens, so that keystrokes may take it (the server runs
        this as background work after loading: a first keystroke never pays for it)."""
        if self._lean_checked is None and self.lean_step is not None:
            self._lean_checked = False  # while the check runs, its own feeds go through transformers
            self._lean_checked = self._check_lean_step(self.tokenizer(PROBE_TEXT)["input_ids"]
                                                       or [self.start_id])
        return bool(self._lean_checked)

    def _lean_usable(self, state: DocumentState, check: bool = True) -> bool:
        """Whether the next one-token feed on `state` can take the lean step. Not yet checked: a decode
        (`check`) checks it now; a keystroke takes transformers' forward meanwhile."""
        from .lean_step import LeanStep

        if self.lean_step is None or not LeanStep.cache_fits(state.kv):
            return False
        return self.check_lean_step() if check else bool(self._lean_checked)

    def _check_lean_step(self, prompt: list[int], steps: int = 4) -> bool:
        """Feed the same tokens through transformers' forward and the lean step, on two scratch caches:
        the logits must be the same to the bit, or the lean step is not used again."""
        try:
            eager, lean = DocumentState(), DocumentState()
            self._advance(eager, prompt, want_scores=False, should_stop=None)
            self._advance(lean, prompt, want_scores=False, should_stop=None)
            tokens = list(self._eager_greedy_ids(eager, steps, None))
            with torch.inference_mode():
                for offset, token in enumerate(tokens[:-1]):
                    logits = self.lean_step.step(token, lean.kv)
                    expected = eager.tail[len(prompt) + offset]
                    if not torch.equal(logits, expected):
                        worst = float((logits - expected).abs().max())
                        logger.warning("the lean decode step differs from transformers' forward by %.2g; "
                                       "decoding with transformers' forward", worst)
                        return False
        except Exception:  # noqa: BLE001 - a model it does not mirror after all: transformers' forward it is
            logger.warning("the lean decode step cannot run this model; decoding with transformers' forward",
                           exc_info=True)
            return False
        return True

    def _lean_greedy_ids(self, state: DocumentState, limit: int, should_stop: StopCheck | None) -> Iterator[int]:
        return self._decode(state, limit, should_stop, lambda token: self.lean_step.step(token, state.kv))

    def _eager_greedy_ids(self, state: DocumentState, limit: int, should_stop: StopCheck | None) -> Iterator[int]:
        def forward(token: int) -> torch.Tensor:
            output = self.model(input_ids=torch.tensor([[token]], device=self.device), cache=state.kv,
                                logits_to_keep=1, use_cache=True)
            return output.logits[0, -1].float()

        return self._decode(state, limit, should_stop, forward)

    @staticmethod
    def _decode(state: DocumentState, limit: int, should_stop: StopCheck | None,
                feed: Callable[[int], torch.Tensor]) -> Iterator[int]:
        """Greedy decoding on `state`: yield the best next token, `feed` it (its next-token logits come
        back), and again; `limit` tokens at most."""
        with torch.inference_mode():
            for step in range(limit):
                next_id = int(torch.argmax(state.last_logits))
                yield next_id
                if step == limit - 1:
                    return
                if should_stop is not None and should_stop():
                    raise Cancelled()
                logits = feed(next_id)
                state.ids.append(next_id)
                state.last_logits = state.tail[len(state.ids) - 1] = logits
                state.tail.pop(len(state.ids) - 1 - TAIL_LOGITS, None)

    def generate_text(self, text: str, **options: Any) -> str:
        return "".join(step.text for step in self.greedy(text, **options))
