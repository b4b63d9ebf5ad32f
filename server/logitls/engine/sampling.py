"""Samplers: what temperature, top-k, top-p and min-p do to the model's next-token distribution.

`SamplingParams.apply(logits)` returns the probabilities a sampler draws from, after the samplers,
in transformers' order (`generate(do_sample=True)`): temperature, then top-k, then top-p, then
min-p, each on what the previous one left; the kept tokens are renormalised, every other token is
exactly 0. llama.cpp's default chain applies temperature last (top-k, top-p, min-p, temperature):
top-k is the same either way, top-p and min-p keep the same tokens only at temperature 1.

temperature 0 (or top_k 1) is greedy: all the probability on the argmax, what `greedy` picks.
The model's own probabilities (softmax of the logits, temperature 1, nothing cut) are never
changed by this module: callers show both, labelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a distribution is computed: settings and the server read this module
    import torch


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    seed: int | None = None  # None: a fresh seed for each generation

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and self.temperature != float("inf")):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 is off), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 is off), got {self.top_p!r}")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1] (0 is off), got {self.min_p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    def label(self) -> str:
        """What was applied, e.g. "temperature 0.7, top-p 0.9" (for labelling the numbers after it)."""
        if self.greedy:
            return "greedy" if self.temperature == 0 else "top-k 1"
        parts = []
        if self.temperature != 1:
            parts.append(f"temperature {self.temperature:g}")
        if self.top_k:
            parts.append(f"top-k {self.top_k}")
        if self.top_p < 1:
            parts.append(f"top-p {self.top_p:g}")
        if self.min_p > 0:
            parts.append(f"min-p {self.min_p:g}")
        return ", ".join(parts) or "temperature 1"

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities after the samplers (fp32, same shape as `logits`, last dimension the vocabulary)."""
        import torch

        logits = logits.float()
        if self.greedy:
            probs = torch.zeros_like(logits)
            return probs.scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        scaled = logits / self.temperature if self.temperature != 1 else logits
        keep = torch.ones_like(scaled, dtype=torch.bool)
        if self.top_k and self.top_k < scaled.shape[-1]:
            kth = scaled.topk(self.top_k, dim=-1).values[..., -1:]
            keep &= scaled >= kth
        if self.top_p < 1:
            probs = torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1)
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            before = sorted_probs.cumsum(-1) - sorted_probs  # the probability of the tokens ahead of this one
            keep_sorted = before < self.top_p
            keep_sorted[..., 0] = True
            keep &= torch.zeros_like(keep).scatter_(-1, order, keep_sorted)
        if self.min_p > 0:
            probs = torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1)
            keep &= probs >= self.min_p * probs.amax(-1, keepdim=True)
        return torch.softmax(scaled.masked_fill(~keep, float("-inf")), dim=-1)

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        import torch

        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator

    def draw(self, logits: torch.Tensor, generator: torch.Generator) -> int:
        """One token id drawn from the distribution after the samplers (the argmax when greedy)."""
        import torch

        if self.greedy:
            return int(torch.argmax(logits))
        probs = self.apply(logits.reshape(-1))
        return int(torch.multinomial(probs, 1, generator=generator))


def from_settings(settings: Any) -> SamplingParams | None:
    """The sampling settings group (settings.SamplingSettings) as params; None where it means greedy."""
    params = SamplingParams(settings.temperature, settings.top_k, settings.top_p, settings.min_p,
                            None if settings.seed < 0 else settings.seed)
    return None if params.greedy else params
