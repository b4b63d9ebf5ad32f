"""Backend "openai": an OpenAI-compatible inference server in place of the local Engine.

- backend.py: the engine adapter (`OpenAIBackend`, the `Backend` protocol of engine/types.py);
- transport.py: HTTP on a private event loop, retries, errors sorted into kinds;
- health.py: what the user hears (one message per kind of failure, facts once);
- stream.py: greedy generation streamed (server-sent events), stoppable from the caller's thread;
- dialects/: one file per kind of server (vLLM, llama.cpp's llama-server, llama-cpp-python, any
  other OpenAI-compatible server): how each scores a text, and what it can therefore do.
"""

from __future__ import annotations

from ..types import Cancelled, GreedyStep
from .backend import EOS_ID, OpenAIBackend, RemoteModel
from .transport import BackendError, stated_limit

__all__ = ["EOS_ID", "BackendError", "Cancelled", "GreedyStep", "OpenAIBackend", "RemoteModel", "stated_limit"]
