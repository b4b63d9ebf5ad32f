"""transformers' causal LMs behind the engine's Model interface: every architecture the native model
(llama.py) does not cover, hub ids, sliding windows and remote code; and the reference in tests.

Its KV cache is transformers' DynamicCache with two layer kinds replaced:
- full-attention layers grow in blocks (kv_cache.GrowableBuffers) instead of re-concatenating;
- sliding-window layers (Mistral, Gemma 2/3, Qwen2 with a window) keep only the last window - 1
  positions in transformers, so once a document is longer than the window they cannot be cropped at
  all: re-typing the last token would mean re-feeding the document. SlidingLayer keeps some slack
  beyond the window so the last tokens can still be cropped; an edit further back cannot be, and
  `can_crop` says so (the engine then feeds the document again).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from .kv_cache import GrowableBuffers
# Positions a sliding layer keeps beyond its window: an edit this close to the end crops the cache.
SLIDING_SLACK = 128


class GrowableLayer(GrowableBuffers, DynamicLayer):
    """transformers' full-attention layer on growable buffers (kv_cache.GrowableBuffers)."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        DynamicLayer.lazy_initialization(self, key_states, value_states)
        self._clear_buffers()

    def reset(self) -> None:
        self._clear_buffers()
        DynamicLayer.reset(self)


class SlidingLayer(DynamicSlidingWindowLayer):
    """A sliding-window layer that keeps up to 2 x `slack` positions more than attention needs.

    Attention is given exactly what transformers' own layer would give it (the mask was sized by
    get_mask_sizes for the last window - 1 positions plus the new ones).
    """

    def __init__(self, sliding_window: int, slack: int, **kwargs: Any) -> None:
        super().__init__(sliding_window, **kwargs)
        self.slack = slack

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        visible = min(self.cumulative_length, self.sliding_window - 1) + key_states.shape[-2]
        self.cumulative_length += key_states.shape[-2]
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        self.keys, self.values = keys, values
        kept = self.sliding_window - 1 + self.slack
        if keys.shape[-2] > kept + self.slack:  # trim in steps of `slack`, not at every token
            self.keys, self.values = keys[..., -kept:, :], values[..., -kept:, :]
        return keys[..., -visible:, :], values[..., -visible:, :]

    def can_crop(self, tokens_to_remove: int) -> bool:
        """Whether the positions that attention after the crop needs are still here."""
        if not self.is_initialized:
            return True
        keep = self.cumulative_length - abs(tokens_to_remove)
        first_held = self.cumulative_length - self.keys.shape[-2]
        return max(0, keep - (self.sliding_window - 1)) >= first_held

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative count: the number of tokens to drop from the end")
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        if not self.can_crop(tokens_to_remove):
            raise RuntimeError("this sliding-window layer no longer holds the positions the crop needs")
        self.keys = self.keys[..., :tokens_to_remove, :]
        self.values = self.values[..., :tokens_to_remove, :]
        self.cumulative_length += tokens_to_remove


def new_dynamic_cache(config: Any) -> DynamicCache:
    """A DynamicCache whose full-attention layers grow in blocks and whose sliding-window layers keep slack.

    Only transformers' two plain layer types are replaced; any other kind (linear attention, quantized,
    indexed) is left as it is, and `crop_cache` treats it as not croppable.
    """
    cache = DynamicCache(config=config)
    cache.layers = [_replacement(layer) for layer in cache.layers]
    return cache


def _replacement(layer: Any) -> Any:
    if type(layer) is DynamicLayer:
        return GrowableLayer()
    if type(layer) is DynamicSlidingWindowLayer:
        return SlidingLayer(layer.sliding_window, SLIDING_SLACK)
    return layer


def can_crop(cache: DynamicCache, tokens_to_remove: int) -> bool:
    """Whether every layer can drop its last `tokens_to_remove` positions and still answer exactly."""
    return tokens_to_remove <= 0 or all(_layer_can_crop(layer, tokens_to_remove) for layer in cache.layers)


def _layer_can_crop(layer: Any, tokens_to_remove: int) -> bool:
    if type(layer) in (GrowableLayer, DynamicLayer) or not getattr(layer, "is_initialized", True):
        return True
    if type(layer) is SlidingLayer:
        return layer.can_crop(-tokens_to_remove)
    if type(layer) is DynamicSlidingWindowLayer:
        return layer.cumulative_length < layer.sliding_window
    return False  # a kind this module does not know (e.g. a recurrent state): assume it cannot


def crop_cache(cache: DynamicCache, tokens_to_remove: int) -> bool:
    """Drop the last `tokens_to_remove` positions of every layer, or change nothing and return False
    when some layer cannot (checked before touching any: a half-cropped cache would be corrupt)."""
    if not can_crop(cache, tokens_to_remove):
        return False
    if tokens_to_remove > 0:
        cache.crop(-tokens_to_remove)  # transformers 5: crop(-k) drops the last k positions
    return True


class TransformersCache:
    """A DynamicCache with the engine's cache interface (length, can_crop, crop)."""

    def __init__(self, inner: DynamicCache) -> None:
        self.inner = inner

    @property
    def length(self) -> int:
        return self.inner.get_seq_length()

    def can_crop(self, tokens_to_remove: int) -> bool:
        return can_crop(self.inner, tokens_to_remove)

    def crop(self, tokens_to_remove: int) -> bool:
        return crop_cache(self.inner, tokens_to_remove)


class TransformersModel:
    """A loaded `AutoModelForCausalLM` as the engine's Model: forward(tokens, cache, logits_to_keep)."""

    forward_path = "transformers"

    def __init__(self, model: Any) -> None:
        self.hf = model
        self.config = model.config
        self.device = model.device
        self.dtype = model.dtype
        self.vocab_size = int(model.get_output_embeddings().out_features)
        limit = getattr(self.config, "max_position_embeddings", None) or getattr(self.config, "n_positions", None)
        self.context_length = int(limit or 2048)
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        self.eos_token_ids = set(eos if isinstance(eos, list) else [eos]) - {None}

    def __getattr__(self, name: str) -> Any:
        # the model's own attributes (named_modules, get_output_embeddings, …): packing and tests see
        # through the adapter
        return getattr(self.__dict__["hf"], name)

    def new_cache(self) -> TransformersCache:
        return TransformersCache(new_dynamic_cache(self.config))

    def forward(self, tokens: list[int], cache: TransformersCache, logits_to_keep: int = 0) -> torch.Tensor:
        """Next-token logits (fp32, [rows, vocab]) after each fed token (the last `logits_to_keep`, or all)."""
        output = self.hf(input_ids=torch.tensor([tokens], device=self.device), cache=cache.inner,
                         logits_to_keep=logits_to_keep, use_cache=True)
        return output.logits[0].float()
