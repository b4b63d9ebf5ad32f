"""Token healing through `logitls serve`: after a space or inside a word, the menu, the ghost text and
the generate command complete what was typed."""

from __future__ import annotations

import random

import pytest
import pytest_asyncio
from lsprotocol import types

from conftest import apply_text_edit, open_document, start_session


def complete(client, uri: str, line: int, character: int):
    return client.text_document_completion_async(types.CompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character)))


def end_of(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines) - 1, len(lines[-1].encode("utf-16-le")) // 2


async def first_applied(client, uri: str, text: str) -> tuple[str, types.CompletionItem]:
    open_document(client, uri, text)
    result = await complete(client, uri, *end_of(text))
    return apply_text_edit(text, result.items[0].text_edit), result.items[0]


@pytest.mark.parametrize("text, expected", [
    ("The capital of France is ", "The capital of France is Paris"),
    ("The capital of France is Pa", "The capital of France is Paris"),
    ("for i in ra", "for i in range"),
    ("import numpy as np\nx = np.zer", "import numpy as np\nx = np.zeros"),
])
async def test_the_first_item_applied_completes_what_was_typed(default_client, text, expected):
    applied, item = await first_applied(default_client, f"file:///heal/{abs(hash(text))}.txt", text)
    assert applied == expected
    assert item.label_details.description.endswith("%")
    assert "of the continuations of" in item.detail  # which number is which
    assert item.detail.startswith(item.label_details.description + "  ")  # where labelDetails is not shown
    assert text + item.insert_text == expected  # a client that ignores textEdit inserts this at the cursor
    assert item.filter_text.startswith(text[item.text_edit.range.start.character:] if "\n" not in text
                                       else text.split("\n")[-1][item.text_edit.range.start.character:])


async def test_paris_after_a_space_shows_the_notebook_probability(default_client):
    _, item = await first_applied(default_client, "file:///heal/space.txt", "The capital of France is ")
    assert item.label == "␣Paris" and item.label_details.description == "77.3%"


async def test_the_raw_view_stays_reachable(default_client):
    default_client.set_configuration({"logitls": {"completion": {"tokenHealing": False}}})
    default_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
    try:
        text = "The capital of France is "
        for _ in range(100):
            applied, item = await first_applied(default_client, "file:///heal/raw.txt", text)
            if applied != "The capital of France is Paris":
                break
        assert applied == "The capital of France is 2"  # the notebook's meaning: the next token after the space
        assert item.text_edit.range.start == item.text_edit.range.end
    finally:
        default_client.set_configuration({"logitls": {"completion": {"tokenHealing": True}}})
        default_client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={}))
        await default_client.workspace_execute_command_async(types.ExecuteCommandParams(command="logitls.status"))


async def test_ghost_text_after_a_space_starts_with_paris(default_client):
    uri = "file:///heal/inline.txt"
    text = "The capital of France is "
    open_document(default_client, uri, text)
    result = await default_client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=0, character=len(text)),
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked)))
    assert result.items[0].insert_text.startswith("Paris")


async def test_generate_inserts_the_healed_continuation(default_client):
    uri = "file:///heal/generate.txt"
    text = "for i in ra"
    edits = []

    @default_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply(params: types.ApplyWorkspaceEditParams):
        edits.append(params.edit)
        return types.ApplyWorkspaceEditResult(applied=True)

    open_document(default_client, uri, text)
    result = await default_client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="logitls.generate",
        arguments=[{"textDocument": {"uri": uri}, "position": {"line": 0, "character": len(text)}, "maxNewTokens": 6}]))
    assert result["applied"] and (text + result["text"]).startswith("for i in range(")
    inserted = edits[0].document_changes[0].edits[0]
    assert inserted.new_text == result["text"] and inserted.range.start.character == len(text)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def healing_client(tiny_models):
    client = await start_session({"model": str(tiny_models["gpt2"])})
    yield client
    await client.shutdown_session()


async def test_random_texts_every_item_reads_as_typed(healing_client, tiny_gpt2_engine):
    """Property: for random texts and cursors, every item applied keeps the text before the cursor and
    continues it with the item's tokens, with the engine's own numbers."""
    rng = random.Random(7)
    pieces = ["the", " cap", "ital", " ", "  ", "is", " Pa", "ris", "\n", ".", "é", "😀", "x=", "np", "(", "\r\n", "\t"]
    for case in range(25):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        cut = rng.randint(0, len(text))
        uri = f"file:///heal/random-{case}.txt"
        open_document(healing_client, uri, text)
        prefix = text[:cut].replace("\r\n", "\n")
        lines = text[:cut].split("\n")
        position = (len(lines) - 1, len(lines[-1].encode("utf-16-le")) // 2)
        if lines[-1].endswith("\r"):
            continue  # a cursor between \r and \n is no place to type
        result = await complete(healing_client, uri, *position)
        healed = tiny_gpt2_engine.healed_next_tokens(text[:cut], 10)
        assert [i.data["tokens"] for i in result.items] == [[t.id for t in c.tokens] for c in healed.choices]
        for item, choice in zip(result.items, healed.choices):
            edit = item.text_edit
            assert edit.range.start.line == edit.range.end.line == position[0]  # one line, as LSP requires
            applied = apply_text_edit(text, edit)
            assert applied.startswith(text[:cut]), (text, cut, item)
            assert applied == text[: healed.fragment_start] + choice.new_text + text[cut:]
            # where textEdit is ignored (jupyterlab-lsp), insertText at the cursor reads the same
            assert text[:cut] + item.insert_text + text[cut:] == applied, (text, cut, item)
            assert item.data["prob"] == pytest.approx(choice.step_prob, rel=1e-4)
        del prefix


async def test_after_a_finished_word_the_menu_says_so_once(default_client):
    """No token goes on from `␣generative`: the raw next tokens, explained on the first item only."""
    text = "Udacity is the best place to learn about generative"
    open_document(default_client, "file:///heal/finished.txt", text)
    result = await complete(default_client, "file:///heal/finished.txt", *end_of(text))
    explained = [item for item in result.items if "no token in the vocabulary goes on from" in item.detail]
    assert explained == [result.items[0]], [item.detail for item in result.items]
    assert "'␣generative'" in explained[0].detail
