"""Where logitls keeps what it builds: converted models, packed weights, the compiled kernel."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Where converted models live: $LOGITLS_CACHE_DIR, else $XDG_CACHE_HOME/logitls, else ~/.cache/logitls."""
    explicit = os.environ.get("LOGITLS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg if xdg else Path.home() / ".cache") / "logitls"
