"""The logit lens: what each layer would predict if the network stopped there.

For one position, the residual stream after the embeddings (layer 0) and after every layer is put
through the model's final norm and LM head, as the last layer's is; softmax in fp32. The last row is
the model's own output (the engine's logits for that position, not recomputed), so it equals
next_tokens exactly. The native Llama-family model captures the residual stream in its forward
(`hidden_states=`); a transformers model gives it with `output_hidden_states=True`, where the last
entry is already normed (the norm is applied once: its logits are the model's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .types import Token, TokenChoice


@dataclass(frozen=True)
class LayerRow:
    layer: int  # 0: the embeddings; N: after the N-th decoder layer (the last is the model's output)
    top: TokenChoice  # this layer's favourite next token
    target: TokenChoice  # the written (or, at the end, the model's own next) token under this layer
    logprobs: torch.Tensor  # [vocab], fp32


@dataclass(frozen=True)
class LayerLens:
    position: int  # index of the token whose next token is predicted (in the tokens the model saw)
    token: Token  # the token at `position`
    target: Token  # the token written after it, or the model's own top-1 at the end of the text
    written: bool  # True when `target` is the written next token
    rows: list[LayerRow]


def final_norm_and_head(hf: Any) -> tuple[Any, Any]:
    """A transformers model's final norm and LM head (Llama-like `model.norm`, GPT-2's `transformer.ln_f`)."""
    base = hf.base_model
    norm = next((getattr(base, name) for name in ("norm", "ln_f", "final_layernorm", "final_layer_norm")
                 if getattr(base, name, None) is not None), None)
    if norm is None:
        raise ValueError(f"{type(hf).__name__}: no final norm found, so no logit lens for this model")
    return norm, hf.get_output_embeddings()


def _softcap(hf: Any, logits: torch.Tensor) -> torch.Tensor:
    cap = getattr(hf.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


@torch.inference_mode()
def layer_logits(model: Any, ids: list[int], position: int) -> list[torch.Tensor]:
    """Logits (fp32, [vocab]) at `position` from the residual stream after the embeddings and after
    each layer but the last, through the final norm and head (the last layer's: the caller's)."""
    if getattr(model, "forward_path", "") == "native":
        states: list[torch.Tensor] = []
        model.forward(ids, model.new_cache(), 1, hidden_states=states)
        stacked = torch.stack([state[0, position] for state in states[:-1]])
        return list(model.layer_logits(stacked))
    hf = model.hf
    norm, head = final_norm_and_head(hf)
    output = hf(input_ids=torch.tensor([ids], device=model.device), output_hidden_states=True, use_cache=False,
                logits_to_keep=1)
    stacked = torch.stack([state[0, position] for state in output.hidden_states[:-1]])
    return list(_softcap(hf, head(norm(stacked))).float())


def lens(engine: Any, ids: list[int], position: int, final_logits: torch.Tensor) -> LayerLens:
    rows_logits = layer_logits(engine.model, ids, position) + [final_logits.float()]
    written = position + 1 < len(ids)
    target_id = ids[position + 1] if written else int(torch.argmax(final_logits))
    rows = []
    for layer, logits in enumerate(rows_logits):
        logprobs = torch.log_softmax(logits, dim=-1)
        top_id = int(torch.argmax(logprobs))
        target_lp = float(logprobs[target_id])
        rank = int((logprobs > logprobs[target_id]).sum()) + 1
        rows.append(LayerRow(layer, TokenChoice(engine.token(top_id), math.exp(float(logprobs[top_id])),
                                                float(logprobs[top_id]), 1),
                             TokenChoice(engine.token(target_id), math.exp(target_lp), target_lp, rank), logprobs))
    return LayerLens(position, engine.token(ids[position]), engine.token(target_id), written, rows)
