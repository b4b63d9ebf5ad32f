"""A document's KV cache on growable buffers: the native model's cache, and the buffer logic that
transformers' full-attention layers share (transformers_model.GrowableLayer).

Each layer keeps its keys and values in buffers with spare room, grown a block at a time, and exposes
the filled part as a view: a step writes only its own position instead of copying the whole cache
with torch.cat (as transformers' DynamicLayer does), and cropping just moves the end.

Every cache the engine holds answers `length`, `can_crop(k)` and `crop(k)`; this module imports
nothing of transformers.
"""

from __future__ import annotations

from typing import Any

import torch

BLOCK = 128  # tokens of room added at a time (at most ~160 tokens of slack per document)


class GrowableBuffers:
    """One layer's keys and values ([1, kv heads, positions, head dim]) in buffers with spare room."""

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
        """Append positions; returns every position's keys and values (views of the buffers)."""
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
        """transformers' meaning: crop(-k) drops the last k positions."""
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count: the number of tokens to drop from the end")
        if tokens_to_remove == 0 or not self.is_initialized or self._key_buffer is None:
            return
        self._length = max(0, self._length + tokens_to_remove)
        self.keys = self._key_buffer[..., : self._length, :]
        self.values = self._value_buffer[..., : self._length, :]


class LayerCache(GrowableBuffers):
    def __init__(self) -> None:
        self.keys = self.values = None
        self.is_initialized = False

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.is_initialized = True
        self._clear_buffers()


class KVCache:
    """The native model's cache: one growable layer cache per decoder layer. Every layer is full
    attention, so any crop is exact."""

    def __init__(self, layers: int) -> None:
        self.layers = [LayerCache() for _ in range(layers)]

    @property
    def length(self) -> int:
        return self.layers[0]._length if self.layers else 0

    def can_crop(self, tokens_to_remove: int) -> bool:
        return True

    def crop(self, tokens_to_remove: int) -> bool:
        """Drop the last `tokens_to_remove` positions of every layer."""
        if tokens_to_remove > 0:
            for layer in self.layers:
                layer.crop(-tokens_to_remove)
        return True


class StaticLayer:
    """One layer's keys and values for a fixed number of positions, written in place at `position`."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, position: torch.Tensor) -> None:
        self.keys, self.values, self.position = keys, values, position

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor):
        self.keys.index_copy_(2, self.position, key_states)
        self.values.index_copy_(2, self.position, value_states)
        return self.keys, self.values


class StaticKVCache:
    """Keys and values for `capacity` positions, allocated once, with the next position as a tensor: a
    one-token step on it has the same shapes every time, so it can be captured as a CUDA graph
    (llama.StaticDecoder). Filled from a document's KVCache; attention masks the unused positions."""

    def __init__(self, source: KVCache, capacity: int) -> None:
        first = source.layers[0]._key_buffer
        self.capacity = capacity
        self.position = torch.tensor([source.length], device=first.device)
        self.layers = []
        for layer in source.layers:
            keys = layer._key_buffer.new_zeros((*layer._key_buffer.shape[:2], capacity, layer._key_buffer.shape[-1]))
            values = layer._value_buffer.new_zeros((*layer._value_buffer.shape[:2], capacity,
                                                    layer._value_buffer.shape[-1]))
            keys[..., : layer._length, :] = layer.keys
            values[..., : layer._length, :] = layer.values
            self.layers.append(StaticLayer(keys, values, self.position))

    def mask(self) -> torch.Tensor:
        return (torch.arange(self.capacity, device=self.position.device) <= self.position)[None, None, None, :]
