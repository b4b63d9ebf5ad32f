"""Any other OpenAI-compatible `/v1/completions` server (OpenAI itself, proxies, Together, …): hover
from `echo` where the server gives it (exact rank within its top k, a bound below), else none."""

from __future__ import annotations

from .echo import EchoDialect


class OpenAICompatible(EchoDialect):
    name = "openai-compatible"

    @staticmethod
    def matches(entry: dict, owner: str) -> bool:
        return True  # the fallback: tried last
