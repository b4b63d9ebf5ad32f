"""A Llama-family causal LM (Llama, Mistral, Qwen2) built without transformers: the server's first
answers, while transformers loads.

Importing transformers and its model classes costs ~2.4 s on a 2-core CPU (torch.distributed.tensor,
torch._dynamo and sympy come with them): more than half of the time from process start to the
first completion. The first completions of a session need none of it (the tokenizer is
lean_tokenizer's, the KV cache growable_cache's). This module builds the same
model from a local model folder (config.json, model.safetensors and, for packed weights, the packed
blocks file) with modules of the same names and the same parameters, and does op for op what
transformers' `LlamaForCausalLM` does with SDPA attention on CPU:
- RMSNorm, RoPE and the MLP as transformers writes them;
- the attention call as transformers' `sdpa_attention_forward` makes it: an empty cache is a causal
  prefill (`is_causal`, grouped-query heads by `enable_gqa`), a chunk after cached positions gets
  transformers' boolean mask with the key/value heads repeated, one token gets no mask;
- keys and values go into the document's cache (growable_cache.LeanCache), whose buffers carry over
  to transformers' cache when its model takes over (kv_cache.from_lean_cache).

So the logits are transformers' bit for bit; the engine checks that on a probe before it takes
transformers' model in this one's place (`Engine.adopt`), and drops every cache on any difference.
It is used only where it can be exactly that model: `lean_config` says which configs.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def lean_config(folder: Path) -> SimpleNamespace | None:
    """The folder's config.json as attributes, or None where this module cannot be exactly the model
    transformers would build: another architecture, a RoPE variant, sliding-window or tensor-parallel
    layers, an activation other than SiLU, or a field whose default it would have to guess."""
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = raw.get("model_type")
    if kind not in ARCHITECTURES or raw.get("architectures") != [ARCHITECTURES[kind]]:
        return None
    rope = raw.get("rope_parameters") or {}
    theta = rope.get("rope_theta", raw.get("rope_theta"))
    if rope.get("rope_type", "default") != "default" or raw.get("rope_scaling") or not isinstance(theta, (int, float)):
        return None
    if raw.get("hidden_act", "silu") != "silu" or raw.get("pretraining_tp", 1) != 1:
        return None
    if any(t != "full_attention" for t in raw.get("layer_types") or []):
        return None
    if (kind == "mistral" and raw.get("sliding_window") is not None) or \
            (kind == "qwen2" and raw.get("use_sliding_window")):
        return None
    needed = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
              "rms_norm_eps", "max_position_embeddings", "tie_word_embeddings")
    if any(not isinstance(raw.get(name), (int, float, bool)) for name in needed):
        return None
    config = SimpleNamespace(**raw)
    config.rope_theta = float(theta)
    config.num_key_value_heads = raw.get("num_key_value_heads") or raw["num_attention_heads"]
    config.head_dim = raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"]
    # biases as each architecture's modeling code places them
    config.qkv_bias = bool(raw.get("attention_bias", False)) if kind == "llama" else kind == "qwen2"
    config.o_bias = bool(raw.get("attention_bias", False)) if kind == "llama" else False
    config.mlp_bias = bool(raw.get("mlp_bias", False)) if kind == "llama" else False
    config.layer_types = ["full_attention"] * raw["num_hidden_layers"]
    config.sliding_window = None
    config.lean = True  # growable_cache.new_document_cache: a LeanCache, no transformers import
    return config


def _meta_linear(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    # Built on the meta device, the file's weights assigned after: no random init to pay for (nor
    # torch's meta-device mode, whose init functions import torch._dynamo: ~0.9 s).
    return nn.Linear(in_features, out_features, bias=bias, device="meta")


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size, device="meta"))
        self.variance_epsilon = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden.dtype
        hidden = hidden.to(torch.float32)
        variance = hidden.pow(2).mean(-1, keepdim=True)
        hidden = hidden * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden.to(input_dtype)


class RotaryEmbedding(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        dim = config.head_dim
        inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.attention_scaling = 1.0

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    batch, heads, length, dim = states.shape
    expanded = states[:, :, None, :, :].expand(batch, heads, groups, length, dim)
    return expanded.reshape(batch, heads * groups, length, dim)


class Attention(nn.Module):
    def __init__(self, config: SimpleNamespace, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        hidden, heads, kv_heads = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
        self.q_proj = _meta_linear(hidden, heads * self.head_dim, bias=config.qkv_bias)
        self.k_proj = _meta_linear(hidden, kv_heads * self.head_dim, bias=config.qkv_bias)
        self.v_proj = _meta_linear(hidden, kv_heads * self.head_dim, bias=config.qkv_bias)
        self.o_proj = _meta_linear(heads * self.head_dim, hidden, bias=config.o_bias)

    def forward(self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                cache: Any) -> torch.Tensor:
        input_shape = hidden.shape[:-1]
        shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden).view(shape).transpose(1, 2)
        key = self.k_proj(hidden).view(shape).transpose(1, 2)
        value = self.v_proj(hidden).view(shape).transpose(1, 2)
        cos, sin = rotary[0].unsqueeze(1), rotary[1].unsqueeze(1)
        query = query * cos + _rotate_half(query) * sin
        key = key * cos + _rotate_half(key) * sin
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        # transformers' sdpa_attention_forward for these cases (no padding, no dropout, no softcap)
        extra = {}
        length = query.shape[2]
        if self.num_key_value_groups > 1:
            if mask is None and key.shape[-1] == value.shape[-1] <= 256:
                extra["enable_gqa"] = True
            else:
                key, value = _repeat_kv(key, self.num_key_value_groups), _repeat_kv(value, self.num_key_value_groups)
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, scale=self.scaling,
                                                  is_causal=length > 1 and mask is None, **extra)
        attended = attended.reshape(attended.shape[0], -1, length, value.shape[-1]).transpose(1, 2).contiguous()
        return self.o_proj(attended.reshape(*input_shape, -1).contiguous())


class MLP(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_proj = _meta_linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = _meta_linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = _meta_linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act_fn = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: SimpleNamespace, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None,
                cache: Any) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), rotary, mask, cache)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class Decoder(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         _weight=torch.empty(config.vocab_size, config.hidden_size, device="meta"))
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)


class LeanCausalLM(nn.Module):
    """The model, with transformers' module names (so packed layers and the lean step apply as to
    transformers' model) and the forward signature the engine calls."""

    def __init__(self, config: SimpleNamespace, eos_token_id: Any = None) -> None:
        super().__init__()
        self.config = config
        self.generation_config = SimpleNamespace(eos_token_id=eos_token_id)
        self.model = Decoder(config)
        self.lm_head = _meta_linear(config.hidden_size, config.vocab_size, bias=False)

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor, cache: Any = None, logits_to_keep: int = 0,
                use_cache: bool = True) -> SimpleNamespace:
        hidden = self.model.embed_tokens(input_ids)
        past = cache.get_seq_length() if cache is not None else 0
        length = input_ids.shape[1]
        position_ids = (torch.arange(length, device=hidden.device) + past).unsqueeze(0)
        mask = None
        if past and length > 1:  # transformers' causal mask, only where SDPA's is_causal cannot stand for it
            kv_positions = torch.arange(past + length, device=hidden.device)
            mask = kv_positions[None, None, None, :] <= position_ids[:, None, :, None]
            mask = mask.expand(1, -1, length, past + length)
        rotary = self.model.rotary_emb(hidden, position_ids)
        for layer in self.model.layers:
            hidden = layer(hidden, rotary, mask, cache)
        hidden = self.model.norm(hidden)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:, :]
        return SimpleNamespace(logits=self.lm_head(hidden))


def build(folder: Path, config: SimpleNamespace, skip: set[str] = frozenset()) -> LeanCausalLM:
    """The model with its weights from the folder's model.safetensors, which must hold them as float32
    (ValueError otherwise); the modules named in `skip` (replaced by packed layers right after) are not read."""
    from safetensors import safe_open

    try:
        generation = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        generation = {}
    eos = generation.get("eos_token_id", getattr(config, "eos_token_id", None))
    model = LeanCausalLM(config, eos)
    wanted = {name for name, _ in model.named_parameters() if name.rpartition(".")[0] not in skip}
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        if config.tie_word_embeddings:
            wanted.discard("lm_head.weight")
        missing = wanted - keys
        if missing:
            raise ValueError(f"model.safetensors lacks {sorted(missing)[:3]}")
        # float32 in the file only: then the tensors are the file's mapped pages, which transformers'
        # model maps again when it takes over; a conversion would hold a second copy of the model meanwhile
        stored = {f.get_slice(name).get_dtype() for name in wanted}
        if stored != {"F32"}:
            raise ValueError(f"weights stored as {sorted(stored)}, not float32")
        for name in wanted:
            state[name] = f.get_tensor(name)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    for name, parameter in model.named_parameters():
        if parameter.is_meta and name.rpartition(".")[0] not in skip:
            raise ValueError(f"no weight for {name}")
    return model.eval()
