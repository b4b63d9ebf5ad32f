"""`logitls serve` driven over stdio the way an editor drives it: for `logitls demo` and `logitls bench`."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from lsprotocol import types


class EditorSession:
    def __init__(self, name: str) -> None:
        from pygls.lsp.client import LanguageClient

        self.client = LanguageClient(name, "1")
        self.ready = asyncio.Event()  # the model loaded, or failed to
        self.messages: list[str] = []  # window/showMessage, as an editor would pop them up
        self.edits: list[types.TextEdit] = []  # what workspace/applyEdit asked for (always applied)

        @self.client.feature("logitls/status")
        def status(params: Any) -> None:
            state = params["state"] if isinstance(params, dict) else params.state
            if state in ("ready", "failed"):
                self.ready.set()

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def show_message(params: types.ShowMessageParams) -> None:
            self.messages.append(params.message)

        @self.client.feature(types.WINDOW_LOG_MESSAGE)
        def log_message(params: types.LogMessageParams) -> None:
            pass  # an editor's log panel: not shown

        self.diagnostics: dict[str, list[types.Diagnostic]] = {}  # the Problems panel: kept, not shown

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def publish_diagnostics(params: types.PublishDiagnosticsParams) -> None:
            self.diagnostics[params.uri] = params.diagnostics

        @self.client.feature(types.WORKSPACE_APPLY_EDIT)
        def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
            for change in params.edit.document_changes or []:
                self.edits.extend(change.edits)
            return types.ApplyWorkspaceEditResult(applied=True)

    async def start(self, initialization_options: dict[str, Any]) -> float:
        """Start the server and initialize it; returns the milliseconds until `initialize` was answered."""
        started = time.perf_counter()
        await self.client.start_io(sys.executable, "-m", "logitls", "serve")
        capabilities = types.ClientCapabilities(workspace=types.WorkspaceClientCapabilities(
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True)))
        await self.client.initialize_async(types.InitializeParams(
            capabilities=capabilities, initialization_options=initialization_options))
        initialize_ms = (time.perf_counter() - started) * 1000
        self.client.initialized(types.InitializedParams())
        return initialize_ms

    @property
    def pid(self) -> int:
        return self.client._server.pid

    async def stop(self) -> None:
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()
