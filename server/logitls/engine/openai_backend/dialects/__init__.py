"""Server dialects, one per file; the first whose `matches` accepts the served model's entry wins."""

from __future__ import annotations

from .base import Dialect
from .llama_cpp_python import LlamaCppPython
from .llama_server import LlamaServer
from .openai import OpenAICompatible
from .vllm import VLLM

DIALECTS: list[type[Dialect]] = [VLLM, LlamaServer, LlamaCppPython, OpenAICompatible]


def detect(entry: dict) -> type[Dialect]:
    owner = str(entry.get("owned_by", "")).lower()
    return next(d for d in DIALECTS if d.matches(entry, owner))


__all__ = ["DIALECTS", "Dialect", "detect"]
