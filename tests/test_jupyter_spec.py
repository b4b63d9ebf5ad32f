"""The spec jupyter-lsp finds through logitls's entry point (server/logitls/jupyter.py)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from logitls.jupyter import spec

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_declares_the_entry_point_jupyter_lsp_loads():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["jupyter_lsp_spec_v1"] == {"logitls": "logitls.jupyter:spec"}


def test_the_spec_passes_jupyter_lsps_own_schema():
    schema = pytest.importorskip("jupyter_lsp.schema")  # the `jupyter` extra; `make test` installs it
    specs = spec(None)
    assert list(schema.LANGUAGE_SERVER_SPEC_MAP.iter_errors(specs)) == []
    assert specs["logitls"]["version"] == schema.SPEC_VERSION


def test_the_spec_covers_md_files_notebook_markdown_cells_and_txt_files():
    logitls = spec(None)["logitls"]
    # JupyterLab picks a server by language: .md files, notebook Markdown cells, .txt files
    assert {"ipythongfm", "markdown", "plain"} <= set(logitls["languages"])
    assert logitls["argv"] == [sys.executable, "-m", "logitls", "serve"]
    assert logitls["requires_documents_on_disk"] is False
