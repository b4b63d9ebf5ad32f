"""How a branch is offered: the alternatives a branch can take, and the `logitls.branch` command that
takes one, as a code action (lsp/branch.py) or a command link in the hover (lsp/hover.py).

Shared by those two features; it imports no feature.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from lsprotocol import types

from ..text import percent

if TYPE_CHECKING:
    from .server import LogitlsServer

COMMAND = "logitls.branch"
KIND = types.CodeActionKind.RefactorRewrite
# Clients known to run `command:` links in a hover (VS Code and its builds, with a trusted hover).
# code-server names itself in clientInfo ("code-server"): the real workbench, links included.
COMMAND_LINK_CLIENTS = ("visual studio code", "vscodium", "code - oss", "vscode", "code-server")


def arguments(uri: str, position: types.Position, token_id: int) -> dict[str, Any]:
    return {"textDocument": {"uri": uri}, "position": {"line": position.line, "character": position.character},
            "tokenId": token_id}


def branchable(score, limit: int) -> list:
    """The alternatives (at most `limit`, as the hover lists them) a branch can take: not the written
    token, no special token, no byte piece of a character."""
    return [choice for choice in score.alternatives[:limit]
            if choice.id != score.token.id and choice.text and not choice.token.special and not choice.token.partial]


def shown(token_text: str) -> str:
    return token_text.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def title(choice) -> str:
    return f"Use '{shown(choice.text)}' ({percent(choice.prob)}) and continue"


def command_links_allowed(ls: LogitlsServer) -> bool:
    caps = ls.client_capabilities
    hover = caps.text_document.hover if caps and caps.text_document else None
    formats = (hover.content_format if hover else None) or []
    if types.MarkupKind.Markdown not in formats:
        return False
    info = ls.client_info
    name = (getattr(info, "name", "") or "").lower()
    return any(client in name for client in COMMAND_LINK_CLIENTS)


def hover_branch_link(ls: LogitlsServer, uri: str, position: types.Position, score):
    """For hover_markdown: a command link per branchable alternative, or None where the client shows none."""
    if score.prob is None or not command_links_allowed(ls):
        return None
    allowed = {choice.id for choice in branchable(score, len(score.alternatives))}

    def link(choice) -> str:
        if choice.id not in allowed:
            return ""
        target = quote(json.dumps([arguments(uri, position, choice.id)], separators=(",", ":")))
        return f'[↪](command:{COMMAND}?{target} "{title(choice)}")'

    return link
