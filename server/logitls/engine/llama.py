"""The native Llama-family model (Llama, Mistral without a sliding window, Qwen2): the model that serves
wherever it applies, from a local (or converted GGUF) folder, for the whole session.

gpt-fast style: one forward over (tokens, cache) serves a prefill, a chunk after cached positions and
a one-token decode step, on dense weights or packed ones (packed.py swaps the linear layers after
loading). The modules have transformers' names and parameters, so the same state dict and packed plan
apply, and each op is the one transformers' `LlamaForCausalLM` runs with SDPA attention:
- RMSNorm, RoPE (cos/sin of the fed positions) and the MLP as transformers writes them;
- attention as `sdpa_attention_forward` calls it: an empty cache is a causal prefill (`is_causal`,
  grouped-query heads by `enable_gqa`), a chunk after cached positions gets transformers' boolean mask
  with the key/value heads repeated, one token gets no mask;
- where packed layers are fused (q|k|v, gate|up), one kernel call computes the group.
So its logits are transformers' bit for bit; tests compare the two on every way a document is fed.
`native_config` says which configs it can be exactly; everything else loads through transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .kv_cache import KVCache, LayerCache, StaticKVCache
from .types import Cancelled

ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def native_config(folder: Path) -> SimpleNamespace | None:
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
    return config


def _meta_linear(in_features: int, out_features: int, bias: bool) -> nn.Linear:
    # Built on the meta device, the file's weights assigned after: no random init to pay for (nor
    # torch's meta-device mode, whose init functions import torch._dynamo).
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


def _linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A linear layer's output, without nn.Module's call machinery for a plain one (a decode step makes
    ~200 of these calls)."""
    if type(module) is nn.Linear:
        return F.linear(x, module.weight, module.bias)
    return module(x)


def _fused(parent: nn.Module, name: str, x: torch.Tensor, widths: list[int]) -> tuple[torch.Tensor, ...] | None:
    """The outputs of a fused packed group (packed.apply_packed adds it as `fused_<first>`) from one
    kernel call, or None where the projections are separate."""
    group = parent._modules.get(name)
    if group is None:
        return None
    return group.linear(x).split(widths, dim=-1)


class Attention(nn.Module):
    def __init__(self, config: SimpleNamespace, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        hidden, heads, kv_heads = config.hidden_size, config.num_attention_heads, config.num_key_value_heads
        self.widths = [heads * self.head_dim, kv_heads * self.head_dim, kv_heads * self.head_dim]
        self.q_proj = _meta_linear(hidden, heads * self.head_dim, bias=config.qkv_bias)
        self.k_proj = _meta_linear(hidden, kv_heads * self.head_dim, bias=config.qkv_bias)
        self.v_proj = _meta_linear(hidden, kv_heads * self.head_dim, bias=config.qkv_bias)
        self.o_proj = _meta_linear(heads * self.head_dim, hidden, bias=config.o_bias)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: LayerCache) -> torch.Tensor:
        input_shape = hidden.shape[:-1]
        shape = (*input_shape, -1, self.head_dim)
        projected = _fused(self, "fused_q", hidden, self.widths) or \
            (_linear(self.q_proj, hidden), _linear(self.k_proj, hidden), _linear(self.v_proj, hidden))
        query, key, value = (p.view(shape).transpose(1, 2) for p in projected)
        query = query * cos + _rotate_half(query) * sin
        key = key * cos + _rotate_half(key) * sin
        key, value = cache.update(key, value)
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
        return _linear(self.o_proj, attended.reshape(*input_shape, -1).contiguous())


class MLP(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.widths = [config.intermediate_size, config.intermediate_size]
        self.gate_proj = _meta_linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = _meta_linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = _meta_linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = _fused(self, "fused_gate", x, self.widths) or (_linear(self.gate_proj, x), _linear(self.up_proj, x))
        return _linear(self.down_proj, F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: SimpleNamespace, layer_idx: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_idx)
        self.mlp = MLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: LayerCache) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), cos, sin, mask, cache)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class Decoder(nn.Module):
    def __init__(self, config: SimpleNamespace) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size,
                                         _weight=torch.empty(config.vocab_size, config.hidden_size, device="meta"))
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config)


class LlamaFamilyModel(nn.Module):
    """The model and the engine's Model interface: `new_cache()` and `forward(tokens, cache, logits_to_keep)`."""

    forward_path = "native"

    def __init__(self, config: SimpleNamespace, eos_token_id: Any = None) -> None:
        super().__init__()
        self.config = config
        self.model = Decoder(config)
        self.lm_head = _meta_linear(config.hidden_size, config.vocab_size, bias=False)
        self.vocab_size = int(config.vocab_size)
        self.context_length = int(config.max_position_embeddings)
        self.eos_token_ids = set(eos_token_id if isinstance(eos_token_id, list) else [eos_token_id]) - {None}

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def new_cache(self) -> KVCache:
        return KVCache(self.config.num_hidden_layers)

    def forward(self, tokens: list[int] | torch.Tensor, cache: KVCache | StaticKVCache,
                logits_to_keep: int = 0, hidden_states: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Feed `tokens` after the cache's positions; next-token logits (fp32, [rows, vocab]) after each of
        them (the last `logits_to_keep`, or all). On a StaticKVCache: one token, given as a tensor [1, 1].
        `hidden_states` (a list): the residual stream is appended to it, [1, tokens, hidden] each, after the
        embeddings and after every layer, before the final norm (the logit lens: layer_logits)."""
        decoder = self.model
        if isinstance(cache, StaticKVCache):
            hidden = decoder.embed_tokens(tokens)
            position_ids, mask = cache.position[None], cache.mask()
        else:
            hidden = decoder.embed_tokens(torch.tensor([tokens], device=self.device))
            past, length = cache.length, len(tokens)
            position_ids = (torch.arange(length, device=hidden.device) + past).unsqueeze(0)
            mask = None
            if past and length > 1:  # transformers' causal mask, only where SDPA's is_causal cannot stand for it
                kv_positions = torch.arange(past + length, device=hidden.device)
                mask = kv_positions[None, None, None, :] <= position_ids[:, None, :, None]
                mask = mask.expand(1, -1, length, past + length)
        cos, sin = decoder.rotary_emb(hidden, position_ids)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        if hidden_states is not None:
            hidden_states.append(hidden)
        for layer, layer_cache in zip(decoder.layers, cache.layers):
            hidden = layer(hidden, cos, sin, mask, layer_cache)
            if hidden_states is not None:
                hidden_states.append(hidden)
        hidden = decoder.norm(hidden)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:, :]
        return _linear(self.lm_head, hidden)[0].float()


    def layer_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logit lens: the final norm and the LM head on one residual stream (fp32 logits)."""
        return _linear(self.lm_head, self.model.norm(hidden)).float()


class StaticDecoder:
    """Greedy decoding on a GPU, gpt-fast style: the model's own forward, one token on a StaticKVCache,
    compiled once with CUDA graphs (`mode="reduce-overhead"`), so a step is one graph launch instead of
    hundreds of kernel launches. Uncompiled (`compile=False`) it runs anywhere: the tests run it on CPU."""

    def __init__(self, model: LlamaFamilyModel, compile: bool) -> None:
        self.model = model
        self.compiled = compile
        self._step = torch.compile(self._forward, mode="reduce-overhead", fullgraph=True) if compile else self._forward

    def _forward(self, token: torch.Tensor, cache: StaticKVCache) -> torch.Tensor:
        return self.model.forward(token, cache, 1)

    @torch.inference_mode()
    def greedy_ids(self, cache: KVCache, last_logits: torch.Tensor, limit: int, should_stop) -> Any:
        """The greedy tokens after what `cache` holds (whose next-token logits are `last_logits`): at most
        `limit`, within the model's context. `cache` itself is left as it was."""
        static = StaticKVCache(cache, min(self.model.context_length, cache.length + limit))
        token = torch.argmax(last_logits).view(1, 1)
        for step in range(limit):
            yield int(token)
            if step == limit - 1 or static.position.item() >= static.capacity:
                return
            if should_stop is not None and should_stop():
                raise Cancelled()
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()
            logits = self._step(token, static).clone()
            static.position += 1
            token = torch.argmax(logits[-1]).view(1, 1)


def build(folder: Path, config: SimpleNamespace, dtype: torch.dtype = torch.float32,
          skip: set[str] = frozenset()) -> LlamaFamilyModel:
    """The model with its weights from the folder's model.safetensors, in `dtype` (tensors stored in it
    are the file's mapped pages, not copies); the modules named in `skip` (replaced by packed layers
    right after) are not read. ValueError where the file lacks a weight."""
    from safetensors import safe_open

    try:
        generation = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        generation = {}
    eos = generation.get("eos_token_id", getattr(config, "eos_token_id", None)) if isinstance(generation, dict) \
        else getattr(config, "eos_token_id", None)
    model = LlamaFamilyModel(config, eos)
    wanted = {name for name, _ in model.named_parameters() if name.rpartition(".")[0] not in skip}
    if config.tie_word_embeddings:
        wanted.discard("lm_head.weight")
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        missing = wanted - set(f.keys())
        if missing:
            raise ValueError(f"model.safetensors lacks {sorted(missing)[:3]}")
        for name in wanted:
            tensor = f.get_tensor(name)
            state[name] = tensor if tensor.dtype == dtype else tensor.to(dtype)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    for name, parameter in model.named_parameters():
        if parameter.is_meta and name.rpartition(".")[0] not in skip:
            raise ValueError(f"no weight for {name}")
    return model.eval()
