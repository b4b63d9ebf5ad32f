"""The growable KV layer's buffers, and the cache the lean stand-in keeps, without importing transformers.

Each layer keeps its keys and values in buffers with spare room, grown a block at a time, and exposes
the filled part as a view (`keys`, `values`): a decode step writes only its own position instead of
copying the whole cache with torch.cat, and cropping just moves the end. kv_cache.GrowableLayer is this
logic inside transformers' cache; LeanCache holds it for lean_model's stand-in, whose first answers
must not wait for transformers' import (~0.45 s), and hands its buffers over to transformers' cache
when transformers' model takes over (kv_cache.from_lean_cache).

The engine asks this module for a document's cache and for crops: the stand-in's caches are answered
here, transformers' by kv_cache, imported only then.
"""

from __future__ import annotations

from typing import Any

import torch

BLOCK = 128  # tokens of room added at a time (at most ~160 tokens of slack per document)


class GrowableBuffers:
    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None
    _length = 0

    def _clear_buffers(self) -> None:
        self._key_buffer = self._value_buffer = None
        self._length = 0

    def _grow(self, needed: int, like_keys: torch.Tensor, like_values: torch.Tensor) -> None:
        capacity = -(-(needed + BLOCK // 4) // BLOCK) * BLOCK
        keys = like_keys.new_empty((*like_keys.shape[:2], capacity, like_keys.shape[-1]))
        values = like_values.new_empty((*like_values.shape[:2], capacity, like_values.shape[-1]))
        if self._length:
            keys[..., : self._length, :] = self._key_buffer[..., : self._length, :]
            values[..., : self._length, :] = self._value_buffer[..., : self._length, :]
        self._key_buffer, self._value_buffer = keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new_length = self._length + key_states.shape[-2]
        if self._key_buffer is None or new_length > self._key_buffer.shape[-2]:
            self._grow(new_length, key_states, value_states)
        self._key_buffer[..., self._length : new_length, :] = key_states
        self._value_buffer[..., self._length : new_length, :] = value_states
        self._length = new_length
        self.keys = self._key_buffer[..., :new_length, :]
        self.values = self._value_buffer[..., :new_length, :]
        return self.keys, self.values

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count: the number of tokens to drop from the end")
        if tokens_to_remove == 0 or not self.is_initialized or self._key_buffer is None:
            return
        self._length = max(0, self._length + tokens_to_remove)
        self.keys = self._key_buffer[..., : self._length, :]
        self.values = self._value_buffer[..., : self._length, :]


class LeanLayer(GrowableBuffers):
    """A full-attention layer's cache with the attributes transformers' DynamicLayer has."""

    is_sliding = False

    def __init__(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device  # as DynamicLayer.lazy_initialization
        self.keys = torch.tensor([], dtype=key_states.dtype, device=self.device)
        self.values = torch.tensor([], dtype=value_states.dtype, device=self.device)
        self.is_initialized = True
        self._clear_buffers()

    def get_seq_length(self) -> int:
        return self._length if self.is_initialized else 0


class LeanCache:
    """The stand-in's cache: what its forward and the lean step call of transformers' DynamicCache."""

    def __init__(self, layers: int) -> None:
        self.layers = [LeanLayer() for _ in range(layers)]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        return self.layers[layer_idx].update(key_states, value_states)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.layers[layer_idx].get_seq_length()

    def crop(self, max_length: int) -> None:  # transformers' meaning: crop(-k) drops the last k positions
        for layer in self.layers:
            layer.crop(max_length)


def new_document_cache(config: Any) -> Any:
    """A document's KV cache: a LeanCache for the stand-in's config, else transformers' (kv_cache)."""
    if getattr(config, "lean", False):
        return LeanCache(config.num_hidden_layers)
    from . import kv_cache

    return kv_cache.new_document_cache(config)


def can_crop(cache: Any, tokens_to_remove: int) -> bool:
    """Whether every layer can drop its last `tokens_to_remove` positions and still answer exactly."""
    if isinstance(cache, LeanCache):
        return True
    from . import kv_cache

    return kv_cache.can_crop(cache, tokens_to_remove)


def crop_cache(cache: Any, tokens_to_remove: int) -> bool:
    """Drop the last `tokens_to_remove` positions of every layer, or change nothing and return False
    when some layer cannot."""
    if isinstance(cache, LeanCache):
        if tokens_to_remove > 0:
            cache.crop(-tokens_to_remove)
        return True
    from . import kv_cache

    return kv_cache.crop_cache(cache, tokens_to_remove)
