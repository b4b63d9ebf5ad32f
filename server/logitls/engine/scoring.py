"""Per-position scores from next-token logits: the written token's log-probability and rank, the
model's alternatives, the entropy of the distribution and the top-1/top-2 margin."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class PositionScore:
    logprob: float
    rank: int
    alternatives: list[tuple[int, float]]  # (token id, logprob), best first
    entropy_bits: float | None = None  # of the whole next-token distribution at this position
    margin: float | None = None  # p(top token) - p(second token)


def score_rows(logits: torch.Tensor, targets: list[int], alternatives: int) -> list[PositionScore]:
    """Row i of `logits` (fp32, [rows, vocab]) scores token targets[i]."""
    if not targets:
        return []
    logprobs = torch.log_softmax(logits, dim=-1)
    target = torch.tensor(targets, device=logprobs.device).unsqueeze(1)
    actual = logprobs.gather(1, target)
    ranks = (logprobs > actual).sum(dim=1) + 1
    entropy = entropy_bits(logprobs)
    k = min(alternatives, logprobs.shape[-1])
    top_logprobs, top_ids = logprobs.topk(min(max(k, 2), logprobs.shape[-1]), dim=-1)
    top_probs = top_logprobs[:, :2].exp()
    margins = (top_probs[:, 0] - top_probs[:, 1]) if top_probs.shape[1] > 1 else top_probs[:, 0]
    actual_l, ranks_l = actual.squeeze(1).tolist(), ranks.tolist()
    top_ids_l, top_lp_l = top_ids[:, :k].tolist(), top_logprobs[:, :k].tolist()
    entropy_l, margin_l = entropy.tolist(), margins.tolist()
    return [PositionScore(actual_l[i], ranks_l[i], list(zip(top_ids_l[i], top_lp_l[i])), entropy_l[i], margin_l[i])
            for i in range(len(targets))]


def entropy_bits(logprobs: torch.Tensor) -> torch.Tensor:
    """Entropy (bits) of each row's distribution: -sum p ln p as one batched dot product per row (an exp
    and one reduction over the vocabulary, cheaper than torch.special.entr). A row with a -inf logprob
    (a masked token) gives 0 * -inf = NaN there: those rows use entr, which counts 0 ln 0 as 0."""
    probs = logprobs.exp()
    nats = -torch.bmm(probs.unsqueeze(1), logprobs.unsqueeze(2)).view(-1)
    bad = torch.isnan(nats)
    if bool(bad.any()):
        nats[bad] = torch.special.entr(probs[bad]).sum(dim=-1)
    return nats / math.log(2)
