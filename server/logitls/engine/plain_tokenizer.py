"""transformers' TokenizersBackend for a plain tokenizer.json, as far as the engine uses it, on the
`tokenizers` library alone: the native model's tokenizer wherever it fits, so that serving the default
model imports nothing of transformers (its import and its tokenizer class cost a good part of the
first answer's time; README, Performance).

`load` takes a folder only where TokenizersBackend would add nothing of its own to the Rust tokenizer
(no truncation or padding, a post-processor present, every named special token already in the
vocabulary, no setting it would apply): then the two give the same ids, offsets and texts, which the
tests check against transformers' tokenizer. Elsewhere transformers' class is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLAIN_CLASS = "TokenizersBackend"  # the class AutoTokenizer takes for a plain tokenizer.json (conversions)
# tokenizer_config.json keys it understands; any other makes `load` decline
KNOWN_KEYS = {"backend", "tokenizer_class", "bos_token", "eos_token", "unk_token", "pad_token", "sep_token",
              "cls_token", "mask_token", "additional_special_tokens", "extra_special_tokens", "model_max_length",
              "is_local", "local_files_only", "clean_up_tokenization_spaces", "chat_template"}
NAMED = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _content(token: Any) -> str | None:
    if token is None or isinstance(token, str):
        return token
    if isinstance(token, dict) and isinstance(token.get("content"), str):
        return token["content"]
    raise ValueError(f"a special token of an unknown form: {token!r}")


class PlainTokenizer:
    def __init__(self, backend: Any, special: dict[str, str | None], extra: list[str]) -> None:
        self.backend_tokenizer = backend
        for name in NAMED:
            setattr(self, name, special.get(name))
            setattr(self, f"{name}_id", None if special.get(name) is None else backend.token_to_id(special[name]))
        named = [getattr(self, f"{name}_id") for name in NAMED if getattr(self, name) is not None]
        self.all_special_ids = list(dict.fromkeys(named + [backend.token_to_id(t) for t in extra]))

    @classmethod
    def load(cls, folder: Path) -> "PlainTokenizer | None":
        """The folder's tokenizer, or None where transformers' class would add something of its own."""
        from tokenizers import Tokenizer

        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
            if not isinstance(config, dict) or config.get("tokenizer_class") != PLAIN_CLASS \
                    or set(config) - KNOWN_KEYS or config.get("clean_up_tokenization_spaces"):
                return None
            special = {name: _content(config.get(name)) for name in NAMED}
            extra = [_content(t) for key in ("additional_special_tokens", "extra_special_tokens")
                     for t in (config.get(key) or [])]
            backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception:  # noqa: BLE001 - anything odd: transformers' class
            return None
        if backend.truncation is not None or backend.padding is not None or backend.post_processor is None:
            return None
        if any(backend.token_to_id(t) is None for t in [*special.values(), *extra] if t is not None):
            return None  # transformers would add it to the vocabulary
        return cls(backend, special, extra)

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False) -> dict:
        encoding = self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens)
        encoded = {"input_ids": encoding.ids, "attention_mask": encoding.attention_mask}
        if return_offsets_mapping:
            encoded["offset_mapping"] = encoding.offsets
        return encoded

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def decode(self, ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False) -> str:
        if clean_up_tokenization_spaces:
            raise ValueError("the plain tokenizer decodes without transformers' clean-up only")
        return self.backend_tokenizer.decode([ids] if isinstance(ids, int) else list(ids),
                                             skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: list, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in sequences]

    def convert_ids_to_tokens(self, ids: Any) -> Any:
        if isinstance(ids, int):
            return self.backend_tokenizer.id_to_token(ids)
        return [self.backend_tokenizer.id_to_token(i) for i in ids]

    def get_vocab(self) -> dict[str, int]:
        return self.backend_tokenizer.get_vocab(with_added_tokens=True)


def same_tokenizer(mine: Any, theirs: Any, probes: list[str]) -> bool:
    """Whether two tokenizers give the same ids, offsets, special ids and texts (on the probes, every
    special id and a sample of the vocabulary)."""
    for text in probes:
        for special in (True, False):
            a = mine(text, add_special_tokens=special, return_offsets_mapping=True)
            b = theirs(text, add_special_tokens=special, return_offsets_mapping=True)
            if list(a["input_ids"]) != list(b["input_ids"]) or \
                    [tuple(o) for o in a["offset_mapping"]] != [tuple(o) for o in b["offset_mapping"]]:
                return False
    if len(mine) != len(theirs) or set(mine.all_special_ids) != set(theirs.all_special_ids) or \
            (mine.bos_token_id, mine.eos_token_id) != (theirs.bos_token_id, theirs.eos_token_id):
        return False
    sample = sorted(set(range(0, len(theirs), 97)) | set(theirs.all_special_ids))
    for skip in (False, True):
        if [mine.decode([i], skip_special_tokens=skip, clean_up_tokenization_spaces=False) for i in sample] != \
                [theirs.decode([i], skip_special_tokens=skip, clean_up_tokenization_spaces=False) for i in sample]:
            return False
    return mine.convert_ids_to_tokens(sample) == theirs.convert_ids_to_tokens(sample)
