"""Model loading and inference. Knows nothing of LSP; the server and the CLI call into it."""

from .loading import DEFAULT_MODEL, DEVICES, DTYPES, LoadedModel, ModelLoadError, cache_root, load_model
from .types import (Backend, Cancelled, Capabilities, GreedyStep, NextTokens, TextScores, Token, TokenChoice,
                    TokenizedText, TokenScore)

__all__ = [
    "DEFAULT_MODEL", "DEVICES", "DTYPES", "LoadedModel", "ModelLoadError", "cache_root", "load_model",
    "NextTokens", "TextScores", "Token", "TokenChoice", "TokenizedText", "TokenScore",
    "Backend", "Capabilities", "Engine", "GreedyStep", "Cancelled",
]


def __getattr__(name: str):
    # Engine imports torch; keep `import logitls.engine` cheap for callers that only need the types.
    if name == "Engine":
        from . import engine

        return getattr(engine, name)
    raise AttributeError(name)
