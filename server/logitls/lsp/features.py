"""The language server with every feature registered on it: the one module that imports them all.

Each feature is a module with `register(server)`, taking what it needs from the server object
(lsp/server.py) and never importing another feature; what several share lives in modules that
import no feature (edit_job, lens, branch_offer, continuation, progress, compare).
"""

from __future__ import annotations

from . import (branch, code_actions, code_lens, completion, diagnostics, generate, hover, inline, lifecycle, score,
               semantic_tokens, test_hooks)
from .server import LogitlsServer

# lifecycle: initialize, settings, model loading, didClose, logitls.status
# completion: textDocument/completion, the next tokens with their probabilities
# hover: the written token's probability and the alternatives
# generate: the logitls.generate command, a greedy continuation written into the document
# branch: another token at a written one, continued greedily (logitls.branch, code actions, hover links)
# inline: textDocument/inlineCompletion, the greedy continuation as ghost text
# semantic_tokens, diagnostics, code_lens: the surprisal lens's colours, surprise diagnostics, document stats
# score: logitls.scoreSelection, logitls.compareSelections and their code action
# code_actions: the one textDocument/codeAction handler, gathering the features' providers (registered after them)
# test_hooks: the test suite's hold on the model thread, only with LOGITLS_TEST_HOOKS=1
FEATURES = (lifecycle, completion, hover, generate, score, branch, inline, semantic_tokens, diagnostics, code_lens,
            code_actions, test_hooks)


def create_server() -> LogitlsServer:
    server = LogitlsServer()
    for feature in FEATURES:
        feature.register(server)
    return server


__all__ = ["FEATURES", "create_server"]
