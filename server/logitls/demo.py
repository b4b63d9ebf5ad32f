"""`logitls demo`: drive `logitls serve` over stdio exactly as an editor does, and print what the
editor would show: the completion menu with probabilities, a hover, and the inserted continuation."""

from __future__ import annotations

import asyncio
import sys
import time

from lsprotocol import types

from .text import visible

PROMPTS = ["Udacity is the best place to learn about generative", "The capital of France is"]


def _menu(items) -> str:
    rows = [f"    {item.label:<18} {item.label_details.description:>7}   {item.detail}" for item in items]
    return "\n".join(rows)


async def run_demo(model: str, max_new_tokens: int) -> int:
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("logitls-demo", "1")
    messages: list[str] = []
    ready = asyncio.Event()
    edits: list[types.TextEdit] = []

    @client.feature("logitls/status")
    def status(params):
        state = params["state"] if isinstance(params, dict) else params.state
        if state in ("ready", "failed"):
            ready.set()

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def show_message(params: types.ShowMessageParams):
        messages.append(params.message)

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def log_message(params: types.LogMessageParams):
        pass

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams):
        for change in params.edit.document_changes or []:
            edits.extend(change.edits)
        return types.ApplyWorkspaceEditResult(applied=True)

    started = time.monotonic()
    await client.start_io(sys.executable, "-m", "logitls", "serve")
    capabilities = types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(workspace_edit=types.WorkspaceEditClientCapabilities(
            document_changes=True)))
    await client.initialize_async(types.InitializeParams(capabilities=capabilities,
                                                         initialization_options={"model": model}))
    client.initialized(types.InitializedParams())
    print(f"initialize answered in {time.monotonic() - started:.2f} s; the model loads in the background…")
    await asyncio.wait_for(ready.wait(), 600)
    if messages:
        print("\n".join(messages))
        return 1
    print(f"model ready after {time.monotonic() - started:.1f} s\n")

    for n, prompt in enumerate(PROMPTS):
        uri = f"file:///demo/prompt{n}.txt"
        client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="plaintext", version=1, text=prompt)))
        end = types.Position(line=0, character=len(prompt))
        doc = types.TextDocumentIdentifier(uri=uri)
        print(f"━━ {prompt}▏")
        t = time.monotonic()
        menu = await client.text_document_completion_async(types.CompletionParams(text_document=doc, position=end))
        print(f"  completion menu ({(time.monotonic() - t) * 1000:.0f} ms):")
        print(_menu(menu.items[:5]))
        last_word = prompt.rfind(" ") + 1
        hover = await client.text_document_hover_async(types.HoverParams(
            text_document=doc, position=types.Position(line=0, character=last_word + 1)))
        if hover is not None:
            print(f"  hover on {visible(prompt[last_word - 1:])!r}:")
            print("\n".join("    " + line for line in hover.contents.value.splitlines()))
        t = time.monotonic()
        result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="logitls.generate",
            arguments=[{"textDocument": {"uri": uri}, "position": {"line": 0, "character": len(prompt)},
                        "maxNewTokens": max_new_tokens}]))
        took = time.monotonic() - t
        print(f"  logitls.generate inserted ({took:.1f} s, stopped by {result['stop']}):")
        print("    " + (prompt + "⟦" + result["text"] + "⟧").replace("\n", "\n    "))
        print()
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return 0


def main(model: str = "default", max_new_tokens: int = 60) -> int:
    return asyncio.run(run_demo(model, max_new_tokens))
