"""textDocument/semanticTokens: every token coloured by its rank under the model (GLTR's buckets).

Token types, in legend order: `likely` (rank ≤ lens.likelyRank, top 10), `plausible` (top 100),
`unlikely` (top 1000), `surprising` (beyond); with `lens.view: entropy`, how unsure the model was at
each position instead: `confident` (entropy < 1 bit), `leaning` (< 3), `unsure` (< 6), `lost` (beyond). Whitespace is not coloured; a token that spans
lines is cut at line ends; ranges follow the negotiated position encoding.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from lsprotocol import types

from ..lens import BUCKET_NAMES, COMPARE_NAMES, ENTROPY_NAMES, visible_spans
from .lens import bucket_edges, scores_if_enabled
from .positions import PositionMap

if TYPE_CHECKING:
    from .server import LogitlsServer

LEGEND = types.SemanticTokensLegend(token_types=[*BUCKET_NAMES, *ENTROPY_NAMES, *COMPARE_NAMES], token_modifiers=[])
# the view's first token type in the legend
VIEW_OFFSET = {"rank": 0, "entropy": len(BUCKET_NAMES), "compare": len(BUCKET_NAMES) + len(ENTROPY_NAMES)}


def encode(text: str, scores, edges, encoding: str, within: tuple[int, int] | None = None,
           view: str = "rank") -> list[int]:
    """LSP's relative encoding: (deltaLine, deltaStart, length, type, modifiers) per span."""
    offset = VIEW_OFFSET[view]
    spans = [span for span in visible_spans(text, scores, edges, view)
             if within is None or not (span.end <= within[0] or span.start >= within[1])]
    ranges = PositionMap(text, encoding).ranges((span.start, span.end) for span in spans)
    data: list[int] = []
    previous_line = previous_start = 0
    for span, where in zip(spans, ranges):
        start, end = where.start, where.end
        delta_line = start.line - previous_line
        delta_start = start.character - previous_start if delta_line == 0 else start.character
        data += [delta_line, delta_start, end.character - start.character, offset + span.bucket, 0]
        previous_line, previous_start = start.line, start.character
    return data


def _delta(old: list[int], new: list[int]) -> types.SemanticTokensEdit:
    """One edit replacing the middle that differs (whole 5-int tokens)."""
    prefix = 0
    for a, b in zip(old, new):
        if a != b:
            break
        prefix += 1
    prefix -= prefix % 5
    suffix = 0
    for a, b in zip(reversed(old[prefix:]), reversed(new[prefix:])):
        if a != b:
            break
        suffix += 1
    suffix -= suffix % 5
    return types.SemanticTokensEdit(start=prefix, delete_count=len(old) - prefix - suffix,
                                    data=new[prefix: len(new) - suffix])


def register(server: LogitlsServer) -> None:
    result_ids = itertools.count(1)

    async def tokens_for(ls: LogitlsServer, uri: str, within_range: types.Range | None = None) -> list[int] | None:
        scored = await scores_if_enabled(ls, uri, True, "colours")
        if scored is None:
            return []
        text, scores = scored
        within = None
        if within_range is not None:
            positions = PositionMap(text, ls.position_encoding)
            # checked against the snapshot before scoring; the scored text may be a later version
            within = (positions.clamped_offset(within_range.start), positions.clamped_offset(within_range.end))
        return encode(text, scores, bucket_edges(ls), ls.position_encoding, within, ls.settings.lens.view)

    @server.feature(types.TEXT_DOCUMENT_SEMANTIC_TOKENS_FULL, LEGEND)
    async def full(ls: LogitlsServer, params: types.SemanticTokensParams) -> types.SemanticTokens:
        data = await tokens_for(ls, params.text_document.uri)
        result_id = str(next(result_ids))
        ls.documents(params.text_document.uri).semantic_tokens = (result_id, data)
        return types.SemanticTokens(data=data, result_id=result_id)

    @server.feature(types.TEXT_DOCUMENT_SEMANTIC_TOKENS_FULL_DELTA)
    async def full_delta(ls: LogitlsServer, params: types.SemanticTokensDeltaParams):
        uri = params.text_document.uri
        data = await tokens_for(ls, uri)
        record = ls.documents(uri)
        previous = record.semantic_tokens
        result_id = str(next(result_ids))
        record.semantic_tokens = (result_id, data)
        if previous is None or previous[0] != params.previous_result_id:
            return types.SemanticTokens(data=data, result_id=result_id)
        return types.SemanticTokensDelta(edits=[_delta(previous[1], data)], result_id=result_id)

    @server.feature(types.TEXT_DOCUMENT_SEMANTIC_TOKENS_RANGE)
    async def in_range(ls: LogitlsServer, params: types.SemanticTokensRangeParams) -> types.SemanticTokens:
        text, _ = ls.snapshot(params.text_document.uri)
        ls.offset_at(text, params.range.start)  # InvalidParams for a range outside the document
        ls.offset_at(text, params.range.end)
        return types.SemanticTokens(data=await tokens_for(ls, params.text_document.uri, params.range))
