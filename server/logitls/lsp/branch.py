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

import logging
import time
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from ..engine.branch import UNTIL, continue_branch
from .branch_offer import COMMAND, KIND, arguments, branchable, title
from .arguments import document_position, field, is_int, optional_int, sampling, single_argument
from .edit_job import apply_versioned_edit, run_with_progress
from .lens import score_at, scored_token
from .worker import JobCancelled, ModelUnavailable

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")

USAGE = ('expected one argument {"textDocument": {"uri": URI}, "position": {"line": L, "character": C}, '
         '"tokenId": N, "until": "line"|"sentence"|"tokens" (optional), "maxNewTokens": N (optional), "temperature", "topK", "topP", "minP", "seed" '
         '(optional: sample the continuation, over the generate.sampling settings)}')


def _wants(context: types.CodeActionContext | None) -> bool:
    only = context.only if context is not None else None
    return not only or any(KIND == kind or KIND.startswith(f"{kind}.") for kind in only)


def parse_arguments(args: tuple[Any, ...]) -> tuple[str, types.Position, int, str | None, int | None, Any]:
    arg = single_argument(COMMAND, USAGE, args)
    uri, position = document_position(COMMAND, USAGE, arg)
    token_id = field(arg, "tokenId", "token_id")
    if not is_int(token_id):
        raise JsonRpcInvalidParams(f"{COMMAND}: tokenId must be an integer from 0 to 2^31-1 (a token id of the "
                                   f"model), got {token_id!r}; {USAGE}")
    until = field(arg, "until")
    if until is not None and until not in UNTIL:
        raise JsonRpcInvalidParams(f"{COMMAND}: until must be one of {', '.join(UNTIL)}, got {until!r}")
    max_new = optional_int(COMMAND, arg, "maxNewTokens", 0, 4096, "", "max_new_tokens")
    return uri, position, token_id, until, max_new, arg


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
    server.add_code_actions(KIND, code_actions)

    # `ls` unannotated: pygls resolves a command handler's annotations, and the server class is a type-only import
    @server.command(COMMAND)
    async def branch(ls, *args: Any) -> dict[str, Any]:
        uri, position, token_id, until, max_new, arg = parse_arguments(args)
        params = sampling(COMMAND, arg, ls.settings.generate.sampling)
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
                                   deadline_passed=lambda: time.monotonic() > deadline, on_step=on_step,
                                   sampling=params), None

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
