"""Each editor set-up colours every semantic token type the server's lens legend has."""

from __future__ import annotations

import json
import re
from pathlib import Path

from logitls.lens import BUCKET_NAMES, COMPARE_NAMES, ENTROPY_NAMES

TYPES = [*BUCKET_NAMES, *ENTROPY_NAMES, *COMPARE_NAMES]  # the rank view's types, then entropy's, then compare's

CLIENT = Path(__file__).resolve().parents[1] / "client-config"


def test_legend_is_gltrs_four_buckets():
    from logitls.lsp.semantic_tokens import LEGEND

    assert list(BUCKET_NAMES) == ["likely", "plausible", "unlikely", "surprising"]
    assert list(ENTROPY_NAMES) == ["confident", "leaning", "unsure", "lost"]
    assert list(LEGEND.token_types) == TYPES


def test_vscode_declares_and_colours_every_type():
    contributes = json.loads((CLIENT / "vscode" / "package.json").read_text())["contributes"]
    assert [t["id"] for t in contributes["semanticTokenTypes"]] == TYPES
    assert set(contributes["semanticTokenScopes"][0]["scopes"]) == set(TYPES)
    rules = contributes["configurationDefaults"]["editor.semanticTokenColorCustomizations"]["rules"]
    assert set(rules) == set(TYPES)


def test_sublime_maps_every_type_to_a_scope():
    settings = json.loads((CLIENT / "sublime" / "LSP-logitls.sublime-settings").read_text())
    assert set(settings["semantic_tokens"]) == set(TYPES)


def test_neovim_links_every_type():
    lua = (CLIENT.parent / "lua" / "logitls" / "init.lua").read_text()  # the plugin sits at the repository root
    block = lua[lua.index("M.lens_colours = {"):lua.index("}\n\nfunction M.set_lens_highlights")]
    assert re.findall(r"^\s+(\w+) = \{", block, flags=re.M) == TYPES
    assert '"@lsp.type." .. kind' in lua
