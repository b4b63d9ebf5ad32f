"""The tokenizer as the engine uses it: each token's text (exactly what inserting it adds), which are
special or half-characters, what the empty text conditions on, the tokenizer's lead (BOS), and the
sorted vocabulary that token healing searches."""

from __future__ import annotations

from typing import Any

import torch

from .healing import VocabularyIndex
from .types import Token


class Vocabulary:
    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: set[int], device: torch.device) -> None:
        self.tokenizer = tokenizer
        self.size = vocab_size
        self.device = device
        self._tokens: dict[int, Token] = {}
        self._index: VocabularyIndex | None = None
        self.special_ids = set(tokenizer.all_special_ids)
        self.eos_ids = set(eos_token_ids) or ({tokenizer.eos_token_id} - {None})
        # What the empty text conditions on: the model's BOS, else its EOS (GPT-2 style models use
        # <|endoftext|> as the document separator).
        start = tokenizer.bos_token_id
        self.start_id = start if start is not None else tokenizer.eos_token_id
        self.lead_ids = self._tokenizer_lead()

    def token(self, token_id: int) -> Token:
        cached = self._tokens.get(token_id)
        if cached is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            piece = self.tokenizer.convert_ids_to_tokens(token_id) or ""
            if piece.startswith("\u2581") and not text.startswith(" "):
                text = " " + text  # SentencePiece drops the word-start space when a token stands alone
            special = token_id in self.special_ids
            cached = Token(token_id, text, special=special, partial="\ufffd" in text and not special)
            self._tokens[token_id] = cached
        return cached

    def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids (with the tokenizer's own special tokens) and their character offsets in `text`."""
        if not text:
            return [], []
        encoded = self.tokenizer(text, return_offsets_mapping=True)
        return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"]) if text else []

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _tokenizer_lead(self) -> list[int]:
        """The special tokens the tokenizer puts before every text (Llama's BOS): none for GPT-2."""
        marked = list(self.tokenizer("a")["input_ids"])
        plain = list(self.tokenizer("a", add_special_tokens=False)["input_ids"])
        for i in range(len(marked) - len(plain) + 1):
            if marked[i : i + len(plain)] == plain:
                lead = marked[:i]
                return lead if all(t in self.special_ids for t in lead) else []
        return []

    def index(self) -> VocabularyIndex:
        """Every insertable token's text, sorted for prefix search (built once, on the first healed menu)."""
        if self._index is None:
            known = min(self.size, len(self.tokenizer))
            texts = self._token_texts(known)
            for i, piece in enumerate(self._token_pieces(known)):
                if piece and piece.startswith("\u2581") and not texts[i].startswith(" "):
                    texts[i] = " " + texts[i]  # as token(): SentencePiece drops a lone token's word-start space
            usable = [i not in self.special_ids and "\ufffd" not in texts[i] for i in range(known)]
            self._index = VocabularyIndex(texts, usable)
            self._index.ids_tensor = torch.tensor(self._index.ids, dtype=torch.long, device=self.device)
        return self._index

    def _token_pieces(self, known: int) -> list[str | None]:
        """Every token's vocabulary entry: from the Rust tokenizer's vocabulary in one call where it has
        one (convert_ids_to_tokens asks for each id in turn)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return self.tokenizer.convert_ids_to_tokens(list(range(known)))
        pieces: list[str | None] = [None] * known
        for piece, token_id in backend.get_vocab(with_added_tokens=True).items():
            if token_id < known:
                pieces[token_id] = piece
        return pieces

    def _token_texts(self, known: int) -> list[str]:
        """Every token's text alone: the Rust tokenizer's own decode_batch, several times faster than
        transformers' batch_decode (Python around the same decoder); where a sample disagrees,
        batch_decode it is."""
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
