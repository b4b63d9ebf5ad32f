"""Branch (issue 13): the code actions "Use '…' (x%) and continue" and the logitls.branch command end to end."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace
from typing import Union

import pytest
from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from conftest import (NOTEBOOK_TEXT, apply_text_edit, edits_for, hold_model_thread, open_document,
                      record_applied_edits, release_model_thread, start_session, wait_until_held)

FRANCE = "The capital of France is Paris. It is big."
PARIS = types.Position(line=0, character=FRANCE.index(" Paris") + 2)  # inside the token
TITLE = re.compile(r"^Use '.+' \((\d+(\.\d+)?%|<0\.01%)\) and continue$")


def branch_args(uri: str, line: int, character: int, **extra):
    return [{"textDocument": {"uri": uri}, "position": {"line": line, "character": character}, **extra}]


def run_branch(client, arguments):
    return client.workspace_execute_command_async(types.ExecuteCommandParams(command="logitls.branch",
                                                                             arguments=arguments))


def code_actions(client, uri: str, position: types.Position, only=None):
    return client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=uri), range=types.Range(start=position, end=position),
        context=types.CodeActionContext(diagnostics=[], only=only)))


def read_code_actions_as_clients_do(client) -> None:
    """lsprotocol reads any `Command | CodeAction` with a `command` key as a Command, so a CodeAction
    carrying a command loses its kind; clients (vscode-languageclient) tell them apart by whether
    `command` is a string. Read them that way."""
    converter = client.protocol._converter

    def structure(obj, _):
        kind = types.Command if isinstance(obj.get("command"), str) else types.CodeAction
        return converter.structure(obj, kind)

    converter.register_structure_hook(Union[types.Command, types.CodeAction], structure)


@pytest.fixture(autouse=True)
def record_edits(request):
    for name in ("tiny_client", "default_client"):
        if name in request.fixturenames:
            client = request.getfixturevalue(name)
            read_code_actions_as_clients_do(client)
            record_applied_edits(client)


def inverse(text: str, edit: types.TextEdit) -> types.TextEdit:
    """The edit that undoes `edit` on `text` (single line, ASCII: characters are UTF-16 units)."""
    start, end = edit.range.start, edit.range.end
    assert start.line == end.line == 0
    return types.TextEdit(range=types.Range(start=start, end=types.Position(
        line=0, character=start.character + len(edit.new_text))), new_text=text[start.character:end.character])


# -- the default model: real language ---------------------------------------------------------------

async def test_code_actions_at_paris_offer_the_alternatives(default_client, default_engine):
    uri = "file:///branch/actions.txt"
    open_document(default_client, uri, FRANCE)
    actions = await code_actions(default_client, uri, PARIS)
    [paris] = [t for t in default_engine.document_scores(FRANCE).tokens if t.token.text == " Paris"]
    expected = [a for a in paris.alternatives[:5] if a.id != paris.token.id]  # hoverAlternatives = 5
    from logitls.text import percent

    assert [a.title for a in actions] == [f"Use '{a.text}' ({percent(a.prob)}) and continue" for a in expected]
    assert "Use ' London' (1.2%) and continue" in [a.title for a in actions]
    for action, alternative in zip(actions, expected):
        assert action.kind == types.CodeActionKind.RefactorRewrite and action.edit is None
        assert action.command.command == "logitls.branch"
        [argument] = action.command.arguments
        assert argument == {"textDocument": {"uri": uri}, "position": {"line": 0, "character": paris.start},
                            "tokenId": alternative.id}


async def test_branching_on_lyon_replaces_paris_and_regenerates_the_line_in_one_edit(default_client,
                                                                                    default_engine):
    from logitls.engine.branch import continue_branch

    uri = "file:///branch/lyon.txt"
    open_document(default_client, uri, FRANCE)
    [lyon] = default_engine.tokenizer(" Lyon", add_special_tokens=False)["input_ids"]
    [paris] = [t for t in default_engine.document_scores(FRANCE).tokens if t.token.text == " Paris"]
    assert lyon not in [a.id for a in paris.alternatives[:5]]  # not offered: the command takes it all the same
    result = await run_branch(default_client, branch_args(uri, 0, PARIS.character, tokenId=lyon))
    expected = continue_branch(default_engine, FRANCE, paris.start, paris.end, " Lyon", until="line",
                               max_new_tokens=64)
    assert result["applied"] is True and result["text"] == expected.new_text and result["stop"] == "line"
    [[edit]] = edits_for(default_client, uri)  # ONE workspace edit holding ONE text edit: one undo
    assert edit.range == types.Range(start=types.Position(line=0, character=paris.start),
                                     end=types.Position(line=0, character=len(FRANCE)))  # the rest of the line
    branched = apply_text_edit(FRANCE, edit)
    assert branched.startswith("The capital of France is Lyon") and "Paris" not in branched and "\n" not in branched
    assert apply_text_edit(branched, inverse(FRANCE, edit)) == FRANCE  # undoing the one edit restores the text


async def test_a_branch_keeps_the_text_after_the_line(default_client, default_engine):
    uri = "file:///branch/two-lines.txt"
    text = FRANCE + "\nSecond line stays."
    open_document(default_client, uri, text)
    actions = await code_actions(default_client, uri, PARIS)
    london = next(a for a in actions if "' London'" in a.title)
    result = await run_branch(default_client, london.command.arguments)
    assert result["applied"] is True and result["text"].startswith(" London")
    [[edit]] = edits_for(default_client, uri)
    assert edit.range.end == types.Position(line=0, character=len(FRANCE))
    assert apply_text_edit(text, edit).endswith("\nSecond line stays.")


async def test_sentence_mode_replaces_the_sentence_only(default_client, default_engine):
    uri = "file:///branch/sentence.txt"
    open_document(default_client, uri, FRANCE)
    [lyon] = default_engine.tokenizer(" Lyon", add_special_tokens=False)["input_ids"]
    result = await run_branch(default_client, branch_args(uri, 0, PARIS.character, tokenId=lyon, until="sentence"))
    [[edit]] = edits_for(default_client, uri)
    assert edit.range.end == types.Position(line=0, character=FRANCE.index(" It"))  # after "Paris."
    assert apply_text_edit(FRANCE, edit) == "The capital of France is" + result["text"] + " It is big."


async def test_a_stale_document_is_not_overwritten(default_client, default_engine):
    uri = "file:///branch/stale.txt"
    open_document(default_client, uri, FRANCE)
    [lyon] = default_engine.tokenizer(" Lyon", add_special_tokens=False)["input_ids"]
    mark = hold_model_thread(default_client, at_check=3, key_contains=uri)
    task = asyncio.ensure_future(run_branch(default_client, branch_args(uri, 0, PARIS.character, tokenId=lyon,
                                                                        until="tokens", maxNewTokens=20)))
    await wait_until_held(default_client, mark)
    end = types.Position(line=0, character=len(FRANCE))
    default_client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=end, end=end),
                                                                text=" Very big.")]))
    release_model_thread(default_client)
    result = await asyncio.wait_for(task, 600)
    assert result["applied"] is False and result["stop"] == "document-changed"
    assert edits_for(default_client, uri) == []
    assert any("changed while branching" in m.message for m in default_client.messages)


# -- tiny models: the shape of things, and bad arguments -------------------------------------------------

async def test_code_action_list_shape(tiny_client, tiny_gpt2_engine):
    uri = "file:///branch/tiny.txt"
    open_document(tiny_client, uri, NOTEBOOK_TEXT)
    scores = tiny_gpt2_engine.document_scores(NOTEBOOK_TEXT).tokens
    token = scores[4]
    position = types.Position(line=0, character=token.start)
    actions = await code_actions(tiny_client, uri, position)
    assert 1 <= len(actions) <= 5
    ids = [a.command.arguments[0]["tokenId"] for a in actions]
    assert len(set(ids)) == len(ids) and token.token.id not in ids
    assert ids == [a.id for a in token.alternatives[:5] if a.id != token.token.id and not a.token.special]
    for action in actions:
        assert TITLE.match(action.title), action.title
        assert action.kind == "refactor.rewrite" and action.command.title == action.title
    # a client asking only for quick fixes gets none; one asking for refactorings gets them
    assert not await code_actions(tiny_client, uri, position, only=[types.CodeActionKind.QuickFix])
    assert len(await code_actions(tiny_client, uri, position, only=[types.CodeActionKind.Refactor])) == len(actions)
    # the first token has nothing before it: no probability, nothing to branch on
    assert not await code_actions(tiny_client, uri, types.Position(line=0, character=0))


async def test_code_action_provider_is_advertised(tiny_client):
    provider = tiny_client.initialize_result.capabilities.code_action_provider
    assert types.CodeActionKind.RefactorRewrite in provider.code_action_kinds  # beside scoring's `source`
    assert "logitls.branch" in tiny_client.initialize_result.capabilities.execute_command_provider.commands


async def test_tiny_branch_equals_the_engine(tiny_client, tiny_gpt2_engine):
    from logitls.engine.branch import continue_branch

    uri = "file:///branch/tiny-equal.txt"
    open_document(tiny_client, uri, NOTEBOOK_TEXT)
    token = tiny_gpt2_engine.document_scores(NOTEBOOK_TEXT).tokens[4]
    alternative = next(a for a in token.alternatives if a.id != token.token.id)
    result = await run_branch(tiny_client, branch_args(uri, 0, token.start + 1, tokenId=alternative.id,
                                                       until="tokens", maxNewTokens=6))
    expected = continue_branch(tiny_gpt2_engine, NOTEBOOK_TEXT, token.start, token.end, alternative.text,
                               until="tokens", max_new_tokens=6)
    assert result["applied"] is True and result["text"] == expected.new_text
    [[edit]] = edits_for(tiny_client, uri)
    assert edit.range == types.Range(start=types.Position(line=0, character=token.start),
                                     end=types.Position(line=0, character=token.end))  # the token alone
    assert apply_text_edit(NOTEBOOK_TEXT, edit) == (NOTEBOOK_TEXT[:token.start] + expected.new_text
                                                    + NOTEBOOK_TEXT[token.end:])


async def test_a_branch_reports_cancellable_progress(tiny_client, tiny_gpt2_engine):
    uri = "file:///branch/progress.txt"
    open_document(tiny_client, uri, NOTEBOOK_TEXT)
    token = tiny_gpt2_engine.document_scores(NOTEBOOK_TEXT).tokens[3]
    alternative = next(a for a in token.alternatives if a.id != token.token.id)
    before = set(tiny_client.progress_reports)
    await run_branch(tiny_client, branch_args(uri, 0, token.start, tokenId=alternative.id, until="tokens",
                                              maxNewTokens=4))
    new = [tiny_client.progress_reports[t] for t in set(tiny_client.progress_reports) - before]
    reports = [r for r in new if r and getattr(r[0], "title", "") == "logitls: branching"]
    assert reports, new
    assert isinstance(reports[0][0], types.WorkDoneProgressBegin) and reports[0][0].cancellable
    assert isinstance(reports[0][-1], types.WorkDoneProgressEnd)


BAD = "file:///branch/bad.txt"


@pytest.mark.parametrize("arguments, message", [
    ([], "expected one argument"),
    ([{"position": {"line": 0, "character": 0}, "tokenId": 1}], "textDocument.uri is missing"),
    ([{"textDocument": {"uri": "file:///branch/never-opened.txt"}, "position": {"line": 0, "character": 0},
       "tokenId": 1}], "unknown document"),
    (branch_args(BAD, 0, 5), "tokenId must be an integer"),
    (branch_args(BAD, 0, 5, tokenId="x"), "tokenId must be an integer"),
    (branch_args(BAD, 0, 5, tokenId=-1), "tokenId must be an integer"),
    (branch_args(BAD, 0, 5, tokenId=True), "tokenId must be an integer"),
    (branch_args(BAD, 0, "x", tokenId=1), "must be integers"),
    (branch_args(BAD, 7, 0, tokenId=1), "past the end of the document"),
    (branch_args(BAD, 0, 5, tokenId=1, until="word"), "until must be one of"),
    (branch_args(BAD, 0, 5, tokenId=1, maxNewTokens=-1), "maxNewTokens must be"),
    (branch_args(BAD, 0, 5, tokenId=10 ** 9), "not a token of the model"),
    (branch_args(BAD, 0, 5, tokenId=50256), "special token"),
    (branch_args(BAD, 0, 11, tokenId=1), "no token at line 0, character 11"),  # the end of the text
])
async def test_wrong_arguments_are_invalid_params(tiny_client, arguments, message):
    open_document(tiny_client, BAD, "hello there")
    with pytest.raises(JsonRpcInvalidParams, match=message):
        await run_branch(tiny_client, arguments)
    assert edits_for(tiny_client, BAD) == []


# -- the hover's command links -----------------------------------------------------------------------

def fake_server(name: str | None, formats):
    hover = types.HoverClientCapabilities(content_format=formats)
    return SimpleNamespace(client_info=types.ClientInfo(name=name) if name else None,
                           client_capabilities=types.ClientCapabilities(
                               text_document=types.TextDocumentClientCapabilities(hover=hover)))


def test_hover_links_only_for_vs_code_with_markdown(tiny_gpt2_engine):
    import json
    from urllib.parse import unquote

    from logitls.lsp.branch_offer import hover_branch_link
    from logitls.lsp.hover import hover_markdown

    token = tiny_gpt2_engine.document_scores(NOTEBOOK_TEXT).tokens[4]
    at = types.Position(line=0, character=token.start)
    markdown = [types.MarkupKind.Markdown, types.MarkupKind.PlainText]
    assert hover_branch_link(fake_server("Neovim", markdown), "file:///x", at, token) is None
    assert hover_branch_link(fake_server("Visual Studio Code", [types.MarkupKind.PlainText]), "file:///x", at,
                             token) is None
    assert hover_branch_link(fake_server("code-server", markdown), "file:///x", at, token) is not None
    link = hover_branch_link(fake_server("Visual Studio Code", markdown), "file:///x", at, token)
    text = hover_markdown(token, 50257, limit=5, branch_link=link)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == 5 and all(row.count("|") == 5 for row in rows)  # every row has the branch column
    links = re.findall(r"\(command:logitls\.branch\?([^ )]+)", text)
    written = [row for row in rows if "◀" in row]
    assert len(links) == 5 - len(written)
    for encoded in links:
        [argument] = json.loads(unquote(encoded))
        assert argument["textDocument"] == {"uri": "file:///x"} and argument["tokenId"] != token.token.id
    plain = hover_markdown(token, 50257, limit=5)
    assert "command:" not in plain and "| rank | token | p |" in plain


async def hover_text(client, uri: str, position: types.Position) -> str:
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=position))
    return hover.contents.value


async def test_vs_code_hovers_carry_branch_links_and_others_do_not(tiny_models, tiny_client, tiny_gpt2_engine):
    import json
    from urllib.parse import unquote

    uri = "file:///branch/hover-links.txt"
    token = tiny_gpt2_engine.document_scores(NOTEBOOK_TEXT).tokens[4]
    position = types.Position(line=0, character=token.start)
    open_document(tiny_client, uri, NOTEBOOK_TEXT)  # a client that says nothing of itself: no links
    assert "command:" not in await hover_text(tiny_client, uri, position)
    client = await start_session({"model": str(tiny_models["gpt2"]), "device": "cpu"},
                                 client_info=types.ClientInfo(name="Visual Studio Code", version="1.95.0"))
    try:
        open_document(client, uri, NOTEBOOK_TEXT)
        text = await hover_text(client, uri, position)
        links = re.findall(r"\(command:logitls\.branch\?([^ )]+)", text)
        assert links, text
        arguments = [json.loads(unquote(encoded))[0] for encoded in links]
        assert {a["tokenId"] for a in arguments} <= {a.id for a in token.alternatives} - {token.token.id}
        assert all(a["position"] == {"line": 0, "character": token.start} for a in arguments)
    finally:
        await client.shutdown_session()
