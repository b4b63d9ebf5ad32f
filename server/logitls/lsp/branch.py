"""Branch: take another token where the text has one, and continue greedily (Loom in the editor).

`textDocument/codeAction` at a written token offers, for each alternative the hover lists
(`hoverAlternatives`, the written token itself left out), an action "Use ' city' (8.1%) and continue"
(kind `refactor.rewrite`). Each carries a `logitls.branch` command rather than an edit: the edit is a
greedy generation, far too slow to compute for every alternative each time the editor asks for code
actions (on every cursor move, in some editors), and `codeAction/resolve` would compute it with no
progress, no cancel and no check that the document is still what it was computed for. The command
computes only the chosen branch and applies it through `workspace/applyEdit` with the same machinery
as `logitls.generate` (edit_job.py): cancellable progress, and an edit that names the document version
and is dropped, with a message, if the document changed meanwhile.

`logitls.branch` arguments: `[{"textDocument": {"uri": URI}, "position": {"line": L, "character": C},
"tokenId": N, "until": "line"|"sentence"|"tokens" (optional), "maxNewTokens": N (optional)}]`. The
position names the token to replace (any character of it). The edit is ONE text edit from the token's
start to the end of the regenerated region (`branch.until`: the rest of the line, of the sentence, or
the token alone), so one undo reverts it; text after the region is kept.

The hover offers the same branches as command links (`[↪](command:logitls.branch?…)`) where the
client renders them: VS Code (its extension marks the hover trusted), when its hover takes markdown.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..engine.branch import UNTIL, continue_branch
from ..text import percent
from .edit_job import apply_versioned_edit, document_position, field, is_int, run_with_progress, single_argument
from .hover import score_at, scored_token
from .server import JobCancelled, LogitlsServer, ModelUnavailable, logger

COMMAND = "logitls.branch"
KIND = types.CodeActionKind.RefactorRewrite
USAGE = ('expected one argument {"textDocument": {"uri": URI}, "position": {"line": L, "character": C}, '
         '"tokenId": N, "until": "line"|"sentence"|"tokens" (optional), "maxNewTokens": N (optional)}')
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


def _wants(context: types.CodeActionContext | None) -> bool:
    only = context.only if context is not None else None
    return not only or any(KIND == kind or KIND.startswith(f"{kind}.") for kind in only)


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


def parse_arguments(args: tuple[Any, ...]) -> tuple[str, types.Position, int, str | None, int | None]:
    arg = single_argument(COMMAND, USAGE, args)
    uri, position = document_position(COMMAND, USAGE, arg)
    token_id = field(arg, "tokenId", "token_id")
    if not is_int(token_id):
        raise JsonRpcInvalidParams(f"{COMMAND}: tokenId must be an integer from 0 to 2^31-1 (a token id of the "
                                   f"model), got {token_id!r}; {USAGE}")
    until = field(arg, "until")
    if until is not None and until not in UNTIL:
        raise JsonRpcInvalidParams(f"{COMMAND}: until must be one of {', '.join(UNTIL)}, got {until!r}")
    max_new = field(arg, "maxNewTokens", "max_new_tokens")
    if max_new is not None and not is_int(max_new, 0, 4096):
        raise JsonRpcInvalidParams(f"{COMMAND}: maxNewTokens must be an integer from 0 to 4096, got {max_new!r}")
    return uri, position, token_id, until, max_new


def _alternative(engine, score, token_id: int):
    """The token `token_id` as the text to put in place of `score`'s, or a reason why it cannot be."""
    token = next((choice.token for choice in score.alternatives if choice.id == token_id), None)
    if token is None and token_id == score.token.id:
        token = score.token
    if token is None:
        if not engine.capabilities.branch or not token_id < engine.vocab_size:
            return None, f"tokenId {token_id} is not a token of the model (or not one the server listed)"
        token = engine.token(token_id)
    if token.special:
        return None, f"tokenId {token_id} is a special token ({token.text!r}): it has no text to write"
    if token.partial or not token.text:
        return None, f"tokenId {token_id} is a piece of a character, with no text of its own"
    return token, None


async def code_actions(ls: LogitlsServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    """"Use '…' (x %) and continue" for the alternatives of the token at the range start (lsp/code_actions.py)."""
    if not _wants(params.context):
        return []
    uri = params.text_document.uri
    text, _version = ls.snapshot(uri)
    positions, offset = ls.offset_at(text, params.range.start)
    try:
        # its own job key: editors ask for code actions on every cursor move, which must not
        # supersede a hover on the same document
        score = await scored_token(ls, uri, text, offset, feature="codeAction")
    except (ModelUnavailable, JobCancelled) as exc:
        logger.debug("code action: none (%s)", exc)
        return []
    if score is None or score.prob is None:
        return []
    start = positions.position(score.start)
    actions = []
    for choice in branchable(score, ls.settings.hover_alternatives):
        name = title(choice)
        actions.append(types.CodeAction(title=name, kind=KIND, command=types.Command(
            title=name, command=COMMAND, arguments=[arguments(uri, start, choice.id)])))
    return actions


def register(server: LogitlsServer) -> None:
    @server.command(COMMAND)
    async def branch(ls: LogitlsServer, *args: Any) -> dict[str, Any]:
        uri, position, token_id, until, max_new = parse_arguments(args)
        text, version = ls.snapshot(uri)
        positions, offset = ls.offset_at(text, position)
        settings = ls.settings.branch
        until = until or settings.until
        max_new = settings.max_new_tokens if max_new is None else max_new
        timeout = ls.settings.generate.timeout_seconds

        def run(engine, should_stop, report):
            score = score_at(engine, text, offset, uri, should_stop)
            if score is None:
                return None, f"no token at line {position.line}, character {position.character}"
            token, problem = _alternative(engine, score, token_id)
            if token is None:
                return None, problem
            deadline = time.monotonic() + timeout
            last = [0.0]

            def on_step(produced: str, count: int) -> None:
                now = time.monotonic()
                if now - last[0] > 0.1:
                    last[0] = now
                    report(token.text + produced, count)

            return continue_branch(engine, text, score.start, score.end, token.text, until=until,
                                   max_new_tokens=max_new, document=uri, should_stop=should_stop,
                                   deadline_passed=lambda: time.monotonic() > deadline, on_step=on_step), None

        result: dict[str, Any] = {"text": "", "applied": False, "stop": "cancelled"}
        status, value = await run_with_progress(ls, uri=uri, feature="branch", title="logitls: branching",
                                                total=max(1, max_new), work=run, command=COMMAND, verb="branch")
        if status != "ok":
            result["stop"] = status
            return result
        branched, problem = value
        if branched is None:
            raise JsonRpcInvalidParams(f"{COMMAND}: {problem}")
        result.update(text=branched.new_text, stop=branched.stop, tokens=branched.generated_tokens)
        if branched.stop == "timeout":
            ls.tell(f"the branch stopped after {timeout:g} s (generate.timeoutSeconds)")
        edit = types.TextEdit(range=positions.range(branched.start, branched.end), new_text=branched.new_text)
        result["range"] = {"start": {"line": edit.range.start.line, "character": edit.range.start.character},
                           "end": {"line": edit.range.end.line, "character": edit.range.end.character}}
        outcome = await apply_versioned_edit(ls, uri, version, text, edit, label="logitls: branch",
                                             what="branch", doing="branching")
        result["applied"] = outcome == "applied"
        if outcome == "document-changed":
            result["stop"] = "document-changed"
        return result
