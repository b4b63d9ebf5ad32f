"""One-token forward of a Llama-family model (Llama, Mistral, Qwen2) without transformers' per-call machinery:
every greedy decode step, and a keystroke's one new token.

A one-token forward through transformers costs ~7 ms of Python on CPU for the default model (masks,
cache bookkeeping, kwargs, output records, module hooks) beside ~6 ms of matmuls on packed weights:
greedy decoding spends half its time there. This step does the same arithmetic with about 25 tensor
ops a layer, gpt-fast style:
- q, k and v come from one call where they are fused (packed weights), and gate/up likewise (dense
  weights are not fused: a fused copy measured +10 % greedy but kept +250 MB resident, the mapped
  originals' pages staying in memory);
- RoPE turns q and k together;
- keys and values are written straight into the document's growable KV cache (growable_cache),
  which therefore holds the generated tokens afterwards exactly as the transformers path leaves it;
- attention is the SDPA call transformers makes (grouped-query heads by `enable_gqa`, no mask).

Only models it can mirror are taken (`LeanStep.supports`): plain full-attention Llama-style layers.
Every op is the one transformers runs, on the same shapes, so the logits are transformers' bit for bit;
the engine checks that once before trusting the step and falls back to transformers' forward for good
on any difference (a model or a torch build where some op dispatches differently).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from .growable_cache import GrowableBuffers

MODEL_TYPES = ("llama", "mistral", "qwen2")
Projection = Callable[[torch.Tensor], torch.Tensor]


def _projection(module: nn.Module) -> Projection:
    """A [rows, in] -> [rows, out] callable for one linear layer, with no module call on the way."""
    from .packed import BlockLinear

    if isinstance(module, BlockLinear):
        op, blocks, kind, k, bias = torch.ops.logitls.gguf_linear, module.blocks, module.kind, module.in_features, module.bias
        if bias is None:
            return lambda x: op(x, blocks, kind, k)
        return lambda x: op(x, blocks, kind, k) + bias
    if type(module) is nn.Linear:
        weight, bias = module.weight, module.bias
        return lambda x: F.linear(x, weight, bias)
    return module


def _joined(parent: nn.Module, names: tuple[str, ...]) -> Projection:
    """The projections `names` of `parent` as one callable: one kernel call where they are fused."""
    from .packed import FusedSlice

    parts = [getattr(parent, name) for name in names]
    if all(isinstance(p, FusedSlice) for p in parts) and len({id(p.fused[0]) for p in parts}) == 1:
        group = parts[0].fused[0]
        if [(p.start, p.end) for p in parts] == sorted((p.start, p.end) for p in parts) and parts[0].start == 0:
            return _projection(group.linear)
    projections = [_projection(p) for p in parts]
    return lambda x: torch.cat([p(x) for p in projections], dim=-1)


def _rms_norm(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    weight, eps = module.weight, module.variance_epsilon

    def norm(x: torch.Tensor) -> torch.Tensor:  # transformers' LlamaRMSNorm, op for op
        held = x.float()
        held = held * torch.rsqrt(held.pow(2).mean(-1, keepdim=True) + eps)
        return weight * held.to(x.dtype)

    return norm


class LeanStep:
    def __init__(self, model: nn.Module) -> None:
        config, inner = model.config, model.model
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.gqa = self.heads != self.kv_heads
        self.embedding = inner.embed_tokens.weight
        self.rotary = inner.rotary_emb
        self.final_norm = _rms_norm(inner.norm)
        self.head = _projection(model.lm_head)
        self.layers = []
        for layer in inner.layers:
            attention, mlp = layer.self_attn, layer.mlp
            self.layers.append((
                _rms_norm(layer.input_layernorm), _joined(attention, ("q_proj", "k_proj", "v_proj")),
                _projection(attention.o_proj), attention.scaling, _rms_norm(layer.post_attention_layernorm),
                _joined(mlp, ("gate_proj", "up_proj")), mlp.act_fn, _projection(mlp.down_proj), mlp.intermediate_size))
        self._probe = self.embedding[:1][None]  # the rotary module reads only dtype and device from it

    @staticmethod
    def supports(model: nn.Module) -> bool:
        config = getattr(model, "config", None)
        if config is None or getattr(config, "model_type", None) not in MODEL_TYPES:
            return False
        if getattr(config, "pretraining_tp", 1) != 1 or getattr(config, "hidden_act", "silu") != "silu":
            return False
        layer_types = getattr(config, "layer_types", None) or ["full_attention"]
        if any(kind != "full_attention" for kind in layer_types):
            return False
        if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True) \
                and config.model_type == "mistral":
            return False
        inner = getattr(model, "model", None)
        return inner is not None and hasattr(inner, "rotary_emb") and hasattr(inner, "embed_tokens")

    @staticmethod
    def cache_fits(cache: Any) -> bool:
        return cache is not None and all(isinstance(layer, GrowableBuffers) and layer.is_initialized
                                         and layer._key_buffer is not None for layer in cache.layers)

    def step(self, token_id: int, cache: Any) -> torch.Tensor:
        """Feed one token at the cache's end; returns the next-token logits (fp32, [vocab])."""
        position = cache.layers[0]._length
        # one position at a time, as transformers computes it: cos/sin of a batch of positions can
        # differ in the last bit (vectorised against scalar tails)
        cos, sin = self.rotary(self._probe, torch.tensor([[position]], device=self.embedding.device))
        cos, sin = cos[0], sin[0]
        half = self.head_dim // 2
        q_heads, k_heads = self.heads, self.kv_heads
        x = self.embedding[token_id][None]  # [1, hidden]
        for (norm_in, qkv, out, scaling, norm_post, gate_up, act, down, inner_size), layer in zip(self.layers, cache.layers):
            heads = qkv(norm_in(x)).view(q_heads + 2 * k_heads, self.head_dim)
            qk = heads[: q_heads + k_heads]
            qk = qk * cos + torch.cat((-qk[:, half:], qk[:, :half]), dim=-1) * sin
            keys, values = _append(layer, qk[q_heads:], heads[q_heads + k_heads:])
            queries = qk[:q_heads].view(1, q_heads, 1, self.head_dim)
            attended = F.scaled_dot_product_attention(queries, keys, values, scale=scaling, enable_gqa=self.gqa)
            x = x + out(attended.reshape(1, q_heads * self.head_dim))
            both = gate_up(norm_post(x))
            x = x + down(act(both[:, :inner_size]) * both[:, inner_size:])
        return self.head(self.final_norm(x))[0].float()


def _append(layer: GrowableBuffers, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Write one position's keys and values ([kv heads, head dim]) at the layer's end, as update() would."""
    length = layer._length + 1
    if length > layer._key_buffer.shape[-2]:
        layer._grow(length, layer._key_buffer, layer._value_buffer)
    layer._key_buffer[0, :, layer._length] = keys
    layer._value_buffer[0, :, layer._length] = values
    layer._length = length
    layer.keys = layer._key_buffer[..., :length, :]
    layer.values = layer._value_buffer[..., :length, :]
    return layer.keys, layer.values
