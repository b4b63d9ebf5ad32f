"""The one-token decode step for Llama-shaped models, without transformers' per-step machinery.

A greedy step on a 135M model on CPU is ~40 ms, and about a tenth of it is not the math: the model's
forward builds an attention mask, runs its output-capturing wrappers, and calls q, k, v, gate and up
as five matrix-vector products where two would do. For one query token against a full-attention
cache none of the mask is needed, so this step calls the decoder's own modules (norms, rotary
embedding, o/down projections, LM head) directly, with q/k/v and gate/up each fused into one matrix.

The fused matrices are built once and the original Linear layers are made views into them, so no
weight is held twice and the prefill (transformers' forward) computes exactly what it did before.
Projections already replaced by packed 4-bit layers (packed.py fuses those itself) are called as
they are. Only full-attention Llama and Qwen2 shapes qualify: anything else, or a step that ever
disagrees with transformers' forward (checked once on first use), keeps the model's own forward.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger("logitls.engine")
SUPPORTED = ("llama", "qwen2")


def _fuse(modules: list[nn.Module]) -> tuple[list[nn.Module], torch.Tensor, torch.Tensor | None] | None:
    """One weight (and bias) for sibling Linear layers, which become views into it."""
    if not all(type(m) is nn.Linear for m in modules):
        return None
    if len({m.bias is None for m in modules}) != 1:
        return None
    weight = torch.cat([m.weight.detach() for m in modules])
    bias = torch.cat([m.bias.detach() for m in modules]) if modules[0].bias is not None else None
    start = 0
    for m in modules:
        rows = m.weight.shape[0]
        m.weight = nn.Parameter(weight[start:start + rows], requires_grad=False)
        if bias is not None:
            m.bias = nn.Parameter(bias[start:start + rows], requires_grad=False)
        start += rows
    return modules, weight, bias


def _still_fused(fused, modules: list[nn.Module]) -> bool:
    """The layers were fused and are still those layers (not since replaced, e.g. by packed ones)."""
    return fused is not None and all(a is b for a, b in zip(fused[0], modules))


class DecodeStep:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.inner = model.model
        self.layers = []
        for layer in self.inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.layers.append((layer, attn, mlp, _fuse([attn.q_proj, attn.k_proj, attn.v_proj]),
                                _fuse([mlp.gate_proj, mlp.up_proj])))
        self.verified = False
        self.enabled = True

    @classmethod
    def for_model(cls, model: Any) -> DecodeStep | None:
        config = model.config
        if getattr(config, "model_type", None) not in SUPPORTED or not hasattr(model, "model"):
            return None
        if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
            return None
        if config.model_type == "llama" and getattr(config, "sliding_window", None):
            return None
        if getattr(config, "_attn_implementation", "sdpa") not in ("sdpa", "eager"):
            return None
        return cls(model)

    def _qkv(self, attn: nn.Module, fused, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not _still_fused(fused, [attn.q_proj, attn.k_proj, attn.v_proj]):
            return attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        _, weight, bias = fused
        return F.linear(x, weight, bias).split([attn.q_proj.out_features, attn.k_proj.out_features,
                                                attn.v_proj.out_features], dim=-1)

    def _mlp(self, mlp: nn.Module, fused, x: torch.Tensor) -> torch.Tensor:
        if not _still_fused(fused, [mlp.gate_proj, mlp.up_proj]):
            gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        else:
            _, weight, bias = fused
            gate, up = F.linear(x, weight, bias).split([mlp.gate_proj.out_features, mlp.up_proj.out_features], dim=-1)
        return mlp.down_proj(mlp.act_fn(gate) * up)

    def __call__(self, token_id: int, position: int, cache: Any) -> torch.Tensor:
        """Feed one token at `position` into `cache`; the next-token logits after it (fp32)."""
        device = self.inner.embed_tokens.weight.device
        hidden = self.inner.embed_tokens(torch.tensor([[token_id]], device=device))
        cos, sin = self.inner.rotary_emb(hidden, torch.tensor([[position]], device=device))
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        for index, (layer, attn, mlp, fused_qkv, fused_mlp) in enumerate(self.layers):
            x = layer.input_layernorm(hidden)
            q, k, v = self._qkv(attn, fused_qkv, x)
            q = q.view(1, 1, -1, attn.head_dim).transpose(1, 2)
            k = k.view(1, 1, -1, attn.head_dim).transpose(1, 2)
            v = v.view(1, 1, -1, attn.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            keys, values = cache.update(k, v, index)
            # one query against every cached position: no mask, nothing causal to hide
            out = F.scaled_dot_product_attention(q, keys, values, scale=attn.scaling,
                                                 enable_gqa=keys.shape[1] != q.shape[1])
            hidden = hidden + attn.o_proj(out.transpose(1, 2).reshape(1, 1, -1))
            hidden = hidden + self._mlp(mlp, fused_mlp, layer.post_attention_layernorm(hidden))
        return self.model.lm_head(self.inner.norm(hidden))[0, -1].float()

    def agrees(self, reference: torch.Tensor, ours: torch.Tensor) -> bool:
        """Checked once, on the first step: the same next token and the same distribution (to
        rounding) as transformers' forward gave at the same place."""
        same = int(reference.argmax()) == int(ours.argmax()) and torch.allclose(
            torch.log_softmax(reference, -1), torch.log_softmax(ours, -1), atol=1e-3, rtol=0)
        self.verified = same
        self.enabled = same
        if not same:
            logger.warning("the lean decode step disagreed with the model's forward; using the forward")
        return same


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
