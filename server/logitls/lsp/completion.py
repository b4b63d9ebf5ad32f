"""textDocument/completion: the model's top-n next tokens at the cursor, with probabilities.

Each item inserts the exact token text at the cursor. The label shows whitespace (`␣Paris`),
`labelDetails` the probability, and `sortText` keeps the menu in probability order. Editors filter
the menu by the word before the cursor; a token such as ` Paris` does not start with that word,
so `filterText` is the word followed by the token: every item survives the filter.
`isIncomplete` makes the editor ask again on the next keystroke.
"""

from __future__ import annotations

import re

from lsprotocol import types

from ..text import percent, visible
from .server import JobCancelled, LogitlsServer, ModelUnavailable, logger

WORD_BEFORE = re.compile(r"\w*$")
SPARE = 16  # extra candidates asked for, so that dropping special tokens still leaves topN


def completion_items(choices, word: str, cursor: types.Position, top_n: int) -> list[types.CompletionItem]:
    items = []
    for choice in choices:
        token = choice.token
        if token.special or token.partial or not token.text:
            continue  # never insert raw markup, half a character, or nothing
        items.append(types.CompletionItem(
            label=visible(token.text),
            label_details=types.CompletionItemLabelDetails(description=percent(choice.prob)),
            kind=types.CompletionItemKind.Text,
            detail=f"p={choice.prob:.4f}  logprob={choice.logprob:.3f}  rank {choice.rank}",
            sort_text=f"{choice.rank:06d}",
            filter_text=word + token.text,
            text_edit=types.TextEdit(range=types.Range(start=cursor, end=cursor), new_text=token.text),
            insert_text_format=types.InsertTextFormat.PlainText,
            data={"id": token.id, "prob": choice.prob, "logprob": choice.logprob, "rank": choice.rank},
        ))
        if len(items) == top_n:
            break
    return items


def register(server: LogitlsServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=[" ", ".", "(", "\n"], resolve_provider=False))
    async def completion(ls: LogitlsServer, params: types.CompletionParams) -> types.CompletionList:
        uri = params.text_document.uri
        text, _version = ls.snapshot(uri)
        _, offset = ls.offset_at(text, params.position)
        prefix = text[:offset]
        top_n = ls.settings.top_n
        try:
            result = await ls.run_model(
                lambda engine, stop: engine.next_tokens(prefix, min(top_n + SPARE, engine.vocab_size),
                                                        document=uri, should_stop=stop),
                key=(uri, "completion"))
        except (ModelUnavailable, JobCancelled) as exc:
            logger.debug("completion: empty (%s)", exc)
            return types.CompletionList(is_incomplete=True, items=[])
        line_start = prefix.rfind("\n") + 1
        word = WORD_BEFORE.search(prefix[line_start:]).group(0)
        return types.CompletionList(is_incomplete=True,
                                    items=completion_items(result.choices, word, params.position, top_n))
