"""Surprise diagnostics: tokens the model found unlikely, e.g. `unlikely here: p=0.00003 (rank 4123,
15.0 bits); the model expected ' foo' (41%)`. A quick way to find typos and odd phrasing.

With `lens.decisionPoints`, also hints (code `decision`) where the model's top two choices were
within `lens.decisionMargin` in probability: `decision point: the model was torn between ' a' (41%)
and ' the' (38%); entropy 3.10 bits`.

Pull (`textDocument/diagnostic`) where the client supports it; otherwise pushed
(`textDocument/publishDiagnostics`) after each lens pass.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcInvalidParams

from ..lens import decision_points, spans
from ..text import percent
from .lens import scores_if_enabled
from .positions import PositionMap
from .worker import JobCancelled

if TYPE_CHECKING:
    from .server import LogitlsServer

logger = logging.getLogger("logitls")

SEVERITIES = {"hint": types.DiagnosticSeverity.Hint, "information": types.DiagnosticSeverity.Information,
              "warning": types.DiagnosticSeverity.Warning}


def surprise_diagnostics(ls: LogitlsServer, text: str, scores) -> list[types.Diagnostic]:
    lens = ls.settings.lens
    surprising = []
    for start, end, score in spans(scores):
        if score.surprisal_bits is None or score.surprisal_bits < lens.diagnostic_min_bits:
            continue
        word_start = start + (len(text[start:end]) - len(text[start:end].lstrip()))
        if word_start < end:  # a token of whitespace only has nothing to underline
            surprising.append((word_start, end, score))
    ranges = PositionMap(text, ls.position_encoding).ranges((start, end) for start, end, _ in surprising)
    found = []
    for (_, _, score), where in zip(surprising, ranges):
        best = score.alternatives[0] if score.alternatives else None
        expected = f"; the model expected '{best.text}' ({percent(best.prob)})" if best else ""
        found.append(types.Diagnostic(
            range=where,
            message=f"unlikely here: p={score.prob:.2g} (rank {score.rank}, {score.surprisal_bits:.1f} bits){expected}",
            severity=SEVERITIES[lens.diagnostic_severity],
            source="logitls",
            code="surprise",
            data={"prob": score.prob, "rank": score.rank, "bits": score.surprisal_bits},
        ))
    return found


def decision_diagnostics(ls: LogitlsServer, text: str, scores) -> list[types.Diagnostic]:
    """Hints where the model's two favourite next tokens were close (`lens.decisionPoints`)."""
    found = []
    for score in decision_points(scores, ls.settings.lens.decision_margin):
        if len(score.alternatives) < 2:
            continue
        first, second = score.alternatives[0], score.alternatives[1]
        piece = text[score.start:score.end]
        start = score.start + (len(piece) - len(piece.lstrip())) if piece.strip() else score.start
        end = score.start + len(piece.rstrip()) if piece.strip() else score.end
        found.append(((start, end), score, first, second))
    ranges = PositionMap(text, ls.position_encoding).ranges(where for where, *_ in found)
    return [types.Diagnostic(
        range=where,
        message=(f"decision point: the model was torn between '{first.text}' ({percent(first.prob)}) and "
                 f"'{second.text}' ({percent(second.prob)}); entropy {score.entropy_bits:.2f} bits"),
        severity=types.DiagnosticSeverity.Hint, source="logitls", code="decision",
        data={"margin": score.margin, "entropyBits": score.entropy_bits})
        for (_, score, first, second), where in zip(found, ranges)]


async def diagnostics_for(ls: LogitlsServer, uri: str) -> list[types.Diagnostic]:
    lens = ls.settings.lens
    scored = await scores_if_enabled(ls, uri, lens.diagnostics or lens.decision_points, "diagnostics")
    if scored is None:
        return []
    return ((surprise_diagnostics(ls, *scored) if lens.diagnostics else [])
            + (decision_diagnostics(ls, *scored) if lens.decision_points else []))


def _pull_supported(ls: LogitlsServer) -> bool:
    document = ls.client_capabilities.text_document
    return bool(document and document.diagnostic)


def register(server: LogitlsServer) -> None:
    @server.feature(types.TEXT_DOCUMENT_DIAGNOSTIC,
                    types.DiagnosticOptions(identifier="logitls", inter_file_dependencies=False,
                                            workspace_diagnostics=False))
    async def pull(ls: LogitlsServer, params: types.DocumentDiagnosticParams) -> types.FullDocumentDiagnosticReport:
        return types.FullDocumentDiagnosticReport(items=await diagnostics_for(ls, params.text_document.uri))

    async def publish(ls: LogitlsServer, uri: str) -> None:
        try:
            items = await diagnostics_for(ls, uri)
        except (JobCancelled, JsonRpcContentModified) as exc:
            logger.debug("lens: diagnostics for %s not published: %s", uri, exc)  # a newer version will publish
            return
        except JsonRpcInvalidParams:
            return  # closed meanwhile
        except Exception:  # noqa: BLE001 - a bug: say so where users look, and keep serving
            logger.exception("lens: diagnostics for %s failed", uri)
            return
        _, version = ls.snapshot(uri)
        ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=items,
                                                                            version=version))

    def schedule(ls: LogitlsServer, uri: str) -> None:
        if _pull_supported(ls) or not ls.documents.is_open(uri):
            return  # the client asks when it wants them
        ls.documents(uri).replace_task("publish-diagnostics", asyncio.ensure_future(publish(ls, uri)))

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def opened(ls: LogitlsServer, params: types.DidOpenTextDocumentParams) -> None:
        schedule(ls, params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def changed(ls: LogitlsServer, params: types.DidChangeTextDocumentParams) -> None:
        schedule(ls, params.text_document.uri)
