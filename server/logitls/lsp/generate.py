"""The `logitls.generate` command: insert the greedy continuation at a position.

Arguments: `[{"textDocument": {"uri": URI}, "position": {"line": L, "character": C}, "maxNewTokens": N}]`
(`maxNewTokens` optional), and optionally `temperature`, `topK`, `topP`, `minP`, `seed` to sample
instead of decoding greedily (over the `generate.sampling` settings, arguments.sampling). Progress reports the text as it grows; cancelling the progress or the
request stops generation and inserts nothing. `generate.timeoutSeconds` caps the time: what was
produced by then is inserted. The edit names the document version it was computed for, and is
dropped (with a message) if the user changed the document meanwhile: a stale edit never lands on
text the user typed. The machinery for all that is shared with `logitls.branch` (edit_job.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsprotocol import types

from .arguments import document_position, optional_int, sampling, single_argument
from .edit_job import JsonRpcServerCancelled, apply_versioned_edit, changed_since, run_with_progress, tell_changed
from .continuation import continuation

if TYPE_CHECKING:
    from .server import LogitlsServer

COMMAND = "logitls.generate"
USAGE = ('expected one argument {"textDocument": {"uri": URI}, "position": {"line": L, "character": C}, '
         '"maxNewTokens": N, "temperature": T, "topK": K, "topP": P, "minP": M, "seed": S (all optional)}')

__all__ = ["COMMAND", "GenerateRequest", "JsonRpcServerCancelled", "parse_arguments", "register"]


@dataclass
class GenerateRequest:
    uri: str
    position: types.Position
    max_new_tokens: int | None
    arg: Any = None  # the raw argument: its sampler fields are read over the settings when the command runs


def parse_arguments(args: tuple[Any, ...]) -> GenerateRequest:
    arg = single_argument(COMMAND, USAGE, args)
    uri, position = document_position(COMMAND, USAGE, arg)
    return GenerateRequest(uri, position, optional_int(COMMAND, arg, "maxNewTokens", 1, 4096, "", "max_new_tokens"),
                           arg)


def register(server: LogitlsServer) -> None:
    @server.command(COMMAND)
    async def generate(ls, *args: Any) -> dict[str, Any]:
        request = parse_arguments(args)
        text, version = ls.snapshot(request.uri)
        _, offset = ls.offset_at(text, request.position)
        prefix = text[:offset]
        settings = ls.settings.generate
        max_new = request.max_new_tokens or settings.max_new_tokens
        heal = ls.settings.completion.token_healing
        params = sampling(COMMAND, request.arg, settings.sampling)
        options = {} if params is None else {"sampling": params}

        def run(engine, should_stop, report) -> tuple[str, str]:
            deadline = time.monotonic() + settings.timeout_seconds
            pieces: list[str] = []
            reason = "length"
            last_report = 0.0
            steps = continuation(engine, prefix, heal, max_new_tokens=max_new, document=request.uri,
                                 should_stop=should_stop, **options)
            for count, step in enumerate(steps, start=1):
                pieces.append(step.text)
                if step.token.id in engine.eos_ids:
                    reason = "eos"
                now = time.monotonic()
                if now - last_report > 0.1:
                    last_report = now
                    report("".join(pieces), count)
                if now > deadline:
                    reason = "timeout"
                    break
            return "".join(pieces), reason

        result: dict[str, Any] = {"text": "", "applied": False, "stop": "cancelled"}
        status, value = await run_with_progress(ls, uri=request.uri, feature="generate",
                                                title="logitls: generating", total=max_new, work=run,
                                                command=COMMAND, verb="generate")
        if status != "ok":
            result["stop"] = status
            return result
        produced, reason = value
        result.update(text=produced, stop=reason)
        if params is not None:
            result["sampling"] = params.label()
        if reason == "timeout":
            ls.tell(f"generation stopped after {settings.timeout_seconds:g} s (generate.timeoutSeconds)")
        if not produced:
            if changed_since(ls, request.uri, version, text):
                tell_changed(ls, "continuation", "generating")
                result["stop"] = "document-changed"
            return result
        edit = types.TextEdit(range=types.Range(start=request.position, end=request.position), new_text=produced)
        outcome = await apply_versioned_edit(ls, request.uri, version, text, edit,
                                             label="logitls: " + ("sampled" if params else "greedy") + " continuation", what="continuation",
                                             doing="generating")
        result["applied"] = outcome == "applied"
        if outcome == "document-changed":
            result["stop"] = "document-changed"
        return result
