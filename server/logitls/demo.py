"""`logitls demo`: drive `logitls serve` over stdio exactly as an editor does, and print what the
editor would show: the completion menu with probabilities, a hover, and the inserted continuation."""

from __future__ import annotations

import asyncio
import time

from lsprotocol import types

from .text import visible

PROMPTS = ["Udacity is the best place to learn about generative", "The capital of France is"]


def _menu(items) -> str:
    rows = [f"    {item.label:<18} {item.label_details.description:>7}   {item.detail}" for item in items]
    return "\n".join(rows)


async def run_demo(model: str, max_new_tokens: int) -> int:
    from .editor_session import EditorSession

    session = EditorSession("logitls-demo")
    client, messages = session.client, session.messages
    started = time.monotonic()
    await session.start({"model": model})
    print(f"initialize answered in {time.monotonic() - started:.2f} s; the model loads in the background…")
    await asyncio.wait_for(session.ready.wait(), 600)
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
    await session.stop()
    return 0


def main(model: str = "default", max_new_tokens: int = 60) -> int:
    return asyncio.run(run_demo(model, max_new_tokens))
