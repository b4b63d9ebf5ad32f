"""textDocument/codeAction: one handler (LSP allows one per server) gathering each feature's actions.

Branch ("Use ' London' (1.2 %) and continue", refactor.rewrite) and score ("Score selection", source)
each provide their own list; a request whose `context.only` names neither kind gets an empty list.
"""

from __future__ import annotations

from lsprotocol import types

from . import branch, score
from .server import LogitlsServer


def register(server: LogitlsServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[branch.KIND, types.CodeActionKind.Source]))
    async def code_actions(ls: LogitlsServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        ls.snapshot(params.text_document.uri)  # InvalidParams for a document that is not open
        return score.code_actions(ls, params) + await branch.code_actions(ls, params)
