"""What the tests against real and stand-in servers share: a backend that records the messages it
would show the user, and a hover on the first line through the language server."""

from __future__ import annotations

from lsprotocol import types


def connect(url: str, messages: list | None = None, **options):
    """OpenAIBackend.connect with its user-facing messages kept, as (level, message), in `messages`
    (and in `.messages` on the backend)."""
    from logitls.engine.openai_backend import OpenAIBackend

    notes = messages if messages is not None else []
    backend = OpenAIBackend.connect(url, notify=lambda level, message: notes.append((level, message)), **options)
    backend.messages = notes
    return backend


def hover(client, uri: str, character: int):
    return client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=character)))
