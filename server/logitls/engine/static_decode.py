"""Greedy decoding with a static KV cache, its one-token step captured as a CUDA graph on GPUs.

On a GPU an eager decode step is launch-bound: ~30 small layers cost ~24 ms for a 135M model on
an H100 while the math takes ~1 ms. gpt-fast's recipe removes that: preallocate the KV cache
(StaticCache, fixed shapes and addresses) and compile the step with
`torch.compile(mode="reduce-overhead")`, which records it as a CUDA graph and replays it.

The recorded step is checked against the eager path on first use (same tokens for a few steps);
if it disagrees or fails to compile, it is switched off and the eager loop is used. On CPU the
same code runs uncompiled (that is how the tests check it): there a static cache is no faster.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

import torch

logger = logging.getLogger("logitls.engine")
BUCKET = 512  # cache lengths are rounded up to this, so a handful of graphs serve every prompt


class StaticDecoder:
    def __init__(self, model: Any, max_cache_len: int, compile_step: bool) -> None:
        from transformers import StaticCache

        self.model = model
        self.max_cache_len = max_cache_len
        self.cache = StaticCache(config=model.config, max_cache_len=max_cache_len)
        self.compiled = compile_step
        self._step = torch.compile(self._eager_step, mode="reduce-overhead", dynamic=False) if compile_step \
            else self._eager_step

    def _eager_step(self, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        output = self.model(input_ids=token, position_ids=position, cache=self.cache, logits_to_keep=1, use_cache=True)
        return output.logits[:, -1].float()

    @torch.inference_mode()
    def greedy_ids(self, prompt: list[int], max_new_tokens: int, stop_ids: set[int],
                   should_stop: Callable[[], bool] | None) -> Iterator[int]:
        """Token ids of the greedy continuation of `prompt`, one at a time."""
        device = self.model.device
        self.cache.reset()
        ids = torch.tensor([prompt], device=device)
        positions = torch.arange(len(prompt), device=device).unsqueeze(0)
        logits = self.model(input_ids=ids, position_ids=positions, cache=self.cache, logits_to_keep=1,
                            use_cache=True).logits[:, -1].float()  # prefill: eager, variable length
        token = torch.argmax(logits, dim=-1, keepdim=True)
        position = torch.tensor([[len(prompt)]], device=device)
        for step in range(max_new_tokens):
            next_id = int(token)
            yield next_id
            if next_id in stop_ids or step == max_new_tokens - 1:
                return
            if should_stop is not None and should_stop():
                return
            if self.compiled:
                torch.compiler.cudagraph_mark_step_begin()
            logits = self._step(token, position).clone()  # the graph's output buffer is reused
            token = torch.argmax(logits, dim=-1, keepdim=True)
            position += 1


class StaticDecoders:
    """One decoder per cache-length bucket, built lazily; switched off if it ever disagrees."""

    def __init__(self, model: Any, model_context: int, compile_step: bool) -> None:
        self.model = model
        self.model_context = model_context
        self.compile_step = compile_step
        self.enabled = True
        self._decoders: dict[int, StaticDecoder] = {}
        self.verified = False

    def decoder_for(self, total_len: int) -> StaticDecoder:
        length = min(self.model_context, -(-total_len // BUCKET) * BUCKET)
        if length not in self._decoders:
            self._decoders[length] = StaticDecoder(self.model, length, self.compile_step)
        return self._decoders[length]

    def verify(self, prompt: list[int], eager_ids: list[int]) -> bool:
        """Check the recorded step against the eager tokens once; switch off on any difference."""
        if self.verified:
            return True
        try:
            ids = list(self.decoder_for(len(prompt) + len(eager_ids)).greedy_ids(prompt, len(eager_ids), set(), None))
        except Exception:  # noqa: BLE001 - an unsupported model or torch build: eager it is
            logger.warning("static-cache decoding is unavailable here; using the eager loop", exc_info=True)
            self.enabled = False
            return False
        if ids != eager_ids:
            logger.warning("static-cache decoding disagreed with the eager loop; using the eager loop")
            self.enabled = False
            return False
        self.verified = True
        return True
