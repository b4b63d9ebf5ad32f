"""textDocument/codeAction: one handler (LSP allows one per server) gathering each feature's actions.

Features add a provider to `server.code_action_providers` as they register (score: "Score
selection", source; branch: "Use ' London' (1.2 %) and continue", refactor.rewrite); this handler,
registered after them, advertises their kinds and concatenates their lists in that order. A request
whose `context.only` names none of a provider's kinds gets nothing from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

if TYPE_CHECKING:
    from .server import LogitlsServer


def register(server: LogitlsServer) -> None:
    providers = list(server.code_action_providers)

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionOptions(
        code_action_kinds=[provider.kind for provider in providers]))
    async def code_actions(ls: LogitlsServer, params: types.CodeActionParams) -> list[types.CodeAction]:
        ls.snapshot(params.text_document.uri)  # InvalidParams for a document that is not open
        actions: list[types.CodeAction] = []
        for provider in providers:
            actions += await provider.actions(ls, params)
        return actions
