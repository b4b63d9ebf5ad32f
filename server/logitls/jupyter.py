"""logitls in JupyterLab: the language-server spec jupyter-lsp finds through its entry point.

`pip install logitls jupyterlab jupyterlab-lsp` is the whole set-up: jupyter-lsp loads every
`jupyter_lsp_spec_v1` entry point (pyproject.toml names `spec` below) and starts the server it
describes when a document of one of its languages opens. JupyterLab picks a server by a document's
language, not its MIME type: `ipythongfm` is a `.md` file, `markdown` a notebook's Markdown cells
(jupyterlab-lsp joins them into one virtual document), `plain` a `.txt` file. Nothing here imports
jupyter-lsp: the spec is plain data, checked against jupyter-lsp's schema by the tests.
"""

from __future__ import annotations

import sys
from typing import Any

LANGUAGES = ["ipythongfm", "markdown", "plain"]
SPEC_VERSION = 2  # jupyter-lsp's schema `current-version`


def spec(manager: Any = None) -> dict[str, dict[str, Any]]:
    """The spec keyed by the server's name; `manager` (jupyter-lsp's LanguageServerManager) is unused."""
    return {
        "logitls": {
            "version": SPEC_VERSION,
            "display_name": "logitls",
            # the interpreter running Jupyter is the one logitls was installed into
            "argv": [sys.executable, "-m", "logitls", "serve"],
            "languages": LANGUAGES,
            "mime_types": ["text/x-ipythongfm", "text/markdown", "text/x-markdown", "text/plain"],
            # the server reads the documents the editor sends, never the disk
            "requires_documents_on_disk": False,
            "install": {"pip": "pip install logitls"},
            "env": {"PYTHONUNBUFFERED": "1"},
        }
    }
