"""textDocument/completion: the model's next tokens at the cursor, with probabilities.

With token healing (`completion.tokenHealing`, on by default) the menu completes what was typed: the
engine backs off the space or half-typed word at the cursor (the fragment) and offers continuations
that spell it. Each item's `textEdit` replaces the fragment, so applied by any editor the document
reads `text before the fragment + item`: `…is ` + ` Paris` gives `…is Paris`. `filterText` is the
item's whole new text, which starts with the fragment: it survives the editor's own filtering on the
text between the edit's start and the cursor. `labelDetails` shows the token's probability given
everything before it; `detail` starts with the same percentage and adds its share among the
continuations of what was typed.
Without healing (or with a backend that cannot heal), items insert the raw next token at the cursor.
`isIncomplete` makes the editor ask again on the next keystroke.

Where `generate.sampling` samples (temperature above 0, top-k not 1) the raw view's `detail` adds,
after the model's own p, the p after those samplers ("after temperature 0.7, top-p 0.9: 93.0%"): what
`logitls.generate` would draw from at the cursor. The healed view does not (its first step is the
likeliest healed continuation, not sampled), nor does a backend without the whole distribution.

Some clients ignore `textEdit` and `labelDetails` (jupyterlab-lsp inserts `insertText`, else the
label, and shows only `detail`): every item's `insertText` is what its edit adds at the cursor (the
new text less the fragment already typed), so the document reads the same either way, and `detail`
leads with the percentage, where a narrow menu still shows it.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from lsprotocol import types

from ..engine.sampling import from_settings
from ..text import percent, visible
from .worker import JobCancelled, ModelUnavailable

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")

WORD_BEFORE = re.compile(r"\w*$")
SPARE = 16  # extra candidates asked for, so that dropping special tokens still leaves topN


def completion_items(choices, word: str, cursor: types.Position, top_n: int, after: list[float] | None = None,
                     samplers: str = "") -> list[types.CompletionItem]:
    """The raw view: each item inserts one token at the cursor. `after`: each choice's p after the
    samplers named by `samplers`, shown beside the model's own."""
    items = []
    for index, choice in enumerate(choices):
        token = choice.token
        if token.special or token.partial or not token.text:
            continue  # never insert raw markup, half a character, or nothing
        data = {"id": token.id, "prob": choice.prob, "logprob": choice.logprob, "rank": choice.rank}
        detail = (f"{percent(choice.prob)}  p={choice.prob:.4f}  logprob={choice.logprob:.3f}  "
                  f"rank {choice.rank}")
        if after is not None:
            detail = (f"{percent(choice.prob)} model p={choice.prob:.4f}  logprob={choice.logprob:.3f}  "
                      f"rank {choice.rank} · after {samplers}: {percent(after[index])}")
            data.update(afterSamplers=after[index], samplers=samplers)
        items.append(types.CompletionItem(
            label=visible(token.text),
            label_details=types.CompletionItemLabelDetails(description=percent(choice.prob)),
            kind=types.CompletionItemKind.Text,
            detail=detail,
            sort_text=f"{choice.rank:06d}",
            filter_text=word + token.text,
            insert_text=token.text,
            text_edit=types.TextEdit(range=types.Range(start=cursor, end=cursor), new_text=token.text),
            insert_text_format=types.InsertTextFormat.PlainText,
            data=data,
        ))
        if len(items) == top_n:
            break
    return items


def healed_items(healed, edit_start: int, edit_range: types.Range) -> list[types.CompletionItem]:
    """The healed view: each item replaces the fragment (from `edit_start`, its part on the cursor's line)."""
    fragment = visible(healed.fragment)
    cut = edit_start - healed.fragment_start  # a fragment that starts on an earlier line (`\n`): edit its last line
    items = []
    for choice in healed.choices:
        token = choice.tokens[-1]
        new_text = choice.new_text[cut:]
        label = visible(choice.new_text if choice.extends_word else token.text)
        if not healed.healed:  # said once, on the first item: the rest of the menu is the same story
            detail = f"{percent(choice.step_prob)}  p={choice.step_prob:.4f}  rank {choice.rank}"
            if not items and fragment:
                detail += (f" · no token in the vocabulary goes on from '{fragment}', so it counts as a "
                           "finished word: these are the model's guesses for what comes next")
        else:
            detail = (f"{percent(choice.step_prob)}  p={choice.step_prob:.4f}: {visible(token.text)} after the "
                      f"text before it; {choice.share:.1%} of the continuations of '{fragment}' "
                      f"(p={choice.prob:.4g} given the text before '{fragment}')  rank {choice.rank}")
        items.append(types.CompletionItem(
            label=label,
            label_details=types.CompletionItemLabelDetails(description=percent(choice.step_prob)),
            kind=types.CompletionItemKind.Text,
            detail=detail,
            sort_text=f"{choice.rank:06d}",
            filter_text=new_text,
            # what the edit adds at the cursor: new_text starts with the fragment (typed, so already there)
            insert_text=choice.new_text[len(healed.fragment):],
            text_edit=types.TextEdit(range=edit_range, new_text=new_text),
            insert_text_format=types.InsertTextFormat.PlainText,
            data={"id": token.id, "prob": choice.step_prob, "logprob": choice.logprob, "rank": choice.rank,
                  "share": choice.share, "pathProb": choice.prob, "tokens": [t.id for t in choice.tokens],
                  "healed": healed.healed},
        ))
    return items


def register(server: LogitlsServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_COMPLETION,
                    types.CompletionOptions(trigger_characters=[" ", ".", "(", "\n"], resolve_provider=False))
    async def completion(ls: LogitlsServer, params: types.CompletionParams) -> types.CompletionList:
        uri = params.text_document.uri
        text, _version = ls.snapshot(uri)
        positions, offset = ls.offset_at(text, params.position)
        prefix = text[:offset]
        top_n = ls.settings.top_n
        heal = ls.settings.completion.token_healing
        sampling = from_settings(ls.settings.generate.sampling)
        after = None

        def run(engine, stop):
            nonlocal after
            if heal and engine.capabilities.healing:  # a server lists only its top k: nothing to heal from
                return engine.healed_next_tokens(prefix, min(top_n, engine.vocab_size), document=uri, should_stop=stop)
            n = min(top_n + SPARE, engine.vocab_size)
            if sampling is not None and engine.capabilities.sampled_distribution:
                result, after = engine.next_tokens_sampled(prefix, sampling, n, document=uri, should_stop=stop)
                return result
            return engine.next_tokens(prefix, n, document=uri, should_stop=stop)

        try:
            result = await ls.run_model(run, key=(uri, "completion"))
        except (ModelUnavailable, JobCancelled) as exc:
            logger.debug("completion: empty (%s)", exc)
            return types.CompletionList(is_incomplete=True, items=[])
        line_start = max(prefix.rfind("\n"), prefix.rfind("\r")) + 1
        if hasattr(result, "fragment"):
            edit_start = max(result.fragment_start, line_start)  # an edit's range is one line (LSP)
            edit_range = types.Range(start=positions.position(edit_start), end=params.position)
            return types.CompletionList(is_incomplete=True, items=healed_items(result, edit_start, edit_range))
        word = WORD_BEFORE.search(prefix[line_start:]).group(0)
        return types.CompletionList(is_incomplete=True,
                                    items=completion_items(result.choices, word, params.position, top_n, after,
                                                           sampling.label() if sampling else ""))
