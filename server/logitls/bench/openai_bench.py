"""`logitls bench --backend openai --endpoint URL`: the openai backend (an OpenAI-compatible server)
side by side with the local backend, in one run on one machine, on the same ~1000-token document:

- cold: the first top-10 request for the document (a unique first line defeats the server's prompt
  cache; the local engine forgets its KV cache);
- keystroke: one character appended, then the top 10 again (the server's prompt cache and the local
  KV cache both warm);
- greedy tokens/s over 64 new tokens (the server streams; locally, logitls's loop and model.generate);
- scores of a 100-token text (llama-cpp-python's `echo`, vLLM's `prompt_logprobs`, llama-server's one
  request per position): the lens's cost per token on that server;
- hover: one token near the end of the document, cold (what the user waits for on a fresh file);
- the lens pass over the whole document: measured where the backend scores whole documents (local,
  vLLM), else estimated from the cost per token (marked "est."), which is why the lens is off there.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from typing import Any

from .engine_bench import TYPED, document_of, run_engine_bench, timed


def hover_offset(document: str) -> int:
    """A character inside the document's last word: hover near the end of the file."""
    return len(document.rstrip()) - 2


def remote_measurements(remote, document: str, short: str, greedy_prompt: str, *, repeats: int, keys: int,
                        new_tokens: int) -> dict[str, Any]:
    cold = []
    for _ in range(repeats):
        fresh = f"# {uuid.uuid4()}\n" + document  # a prefix the server has never seen: a full prefill
        ms, result = timed(lambda: remote.next_tokens(fresh, 10))
        if not result.choices:
            raise RuntimeError(f"the server at {remote.base_url} gave no answer (see the message above)")
        cold.append(ms)
    text = f"# {uuid.uuid4()}\n" + document
    remote.next_tokens(text, 10)
    strokes = []
    for i in range(keys):
        text += TYPED[i % len(TYPED)]
        ms, _ = timed(lambda: remote.next_tokens(text, 10))
        strokes.append(ms)
    rates, first_token = [], []
    for _ in range(max(1, repeats - 1)):
        started = time.perf_counter()
        count, first = 0, None
        for step in remote.greedy(greedy_prompt, max_new_tokens=new_tokens):
            if step.token.id in remote.eos_ids:
                break
            count += 1
            if first is None:
                first = (time.perf_counter() - started) * 1000
        elapsed = time.perf_counter() - started
        rates.append(count / elapsed if elapsed > 0 else 0.0)
        first_token.append(first or 0.0)
    hover_ms, scores = timed(lambda: remote.token_scores(short))
    per_token = hover_ms / len(scores.tokens) if scores.tokens else None
    fresh = f"# {uuid.uuid4()}\n" + document
    one_ms, one = timed(lambda: remote.token_score_at(fresh, hover_offset(fresh), document="bench-hover"))
    if remote.capabilities.document_scores:
        lens_ms, lens = timed(lambda: remote.document_scores(fresh, document="bench-lens"))
        lens_ms, estimated = (lens_ms if lens.tokens else None), False
    else:
        lens_ms = per_token * remote.token_count(fresh) if per_token is not None else None
        estimated = True
    return {"cold_prefill_ms": statistics.median(cold), "keystroke_ms": statistics.median(strokes),
            "greedy_tok_s": max(rates), "greedy_first_token_ms": min(first_token), "greedy_tokens": count,
            "hover_100_tokens_ms": hover_ms if scores.tokens else None, "lens_ms_per_token": per_token,
            "hover_one_token_ms": one_ms if one is not None else None, "lens_pass_ms": lens_ms,
            "lens_pass_estimated": estimated, "ranks": remote.capabilities.ranks}


def run(args) -> dict[str, Any]:
    from ..engine import Engine
    from ..engine.openai_backend import OpenAIBackend
    from .report import machine

    messages: list[str] = []
    remote = OpenAIBackend.connect(args.endpoint, model=args.api_model, api_key_env=args.api_key_env,
                                   timeout=600, notify=lambda level, message: messages.append(f"{level}: {message}"))
    if remote.down:
        raise RuntimeError(messages[-1] if messages else f"cannot use {args.endpoint}")
    engine = Engine.load(args.model, dtype=args.dtype, device=args.device, threads=args.threads)
    doc_tokens = min(1000, max(24, engine.context_window - 80))
    document = document_of(engine, doc_tokens)
    short = document_of(engine, 100)
    greedy_prompt = "1, 2, 3, 4, 5, 6, 7, 8,"  # counts on: no early end-of-sequence on either side
    repeats, keys, new_tokens = (1, 5, 64) if args.quick else (3, 20, 64)
    local = run_engine_bench(engine, doc_tokens=doc_tokens, repeats=repeats, keys=keys, greedy_tokens=new_tokens)
    hover_ms, _ = timed(lambda: engine.token_scores(short, document="bench-hover"))
    local["hover_100_tokens_ms"] = hover_ms
    local["lens_ms_per_token"] = hover_ms / max(1, engine.token_count(short))
    # Locally hover reads the lens's scores of the document: a cold hover is a cold lens pass.
    lens_ms, _ = timed(lambda: engine.document_scores(document, document="bench-lens"))
    local.update(hover_one_token_ms=lens_ms, lens_pass_ms=lens_ms, lens_pass_estimated=False, ranks="exact")
    served = remote_measurements(remote, document, short, greedy_prompt, repeats=repeats, keys=keys,
                                 new_tokens=new_tokens)
    remote.close()
    return {"machine": machine(), "command": " ".join(["logitls", *sys.argv[2:]]),
            "document_tokens": len(engine.tokenizer(document)["input_ids"]),
            "local": {"model": args.model, "dtype": args.dtype, "device": engine.loaded.device, **local},
            "openai": {"endpoint": remote.base_url, "model": remote.model_name, "server": remote.server_kind,
                       "top_n_cap": remote.top_n_cap, **served},
            "messages": messages}


def table(results: dict[str, Any]) -> str:
    local, served = results["local"], results["openai"]
    rows = [f"logitls bench --backend openai: {served['server']} at {served['endpoint']} ({served['model']})",
            f"  against local {local['model']} ({local['dtype']}, {local['device']}) on {results['machine']}",
            f"document: {results['document_tokens']} tokens", "",
            f"  {'':<44}{'local':>12}{'openai':>12}"]

    def row(label: str, a: float | None, b: float | None, unit: str, b_mark: str = "") -> None:
        show = lambda v, mark="": f"{'—':>9}   " if v is None else f"{v:9.1f}{unit:>3}{mark}"
        rows.append(f"  {label:<44}{show(a)}{show(b, b_mark)}")

    row("cold: first top-10 for the document", local["cold_prefill_ms"], served["cold_prefill_ms"], "ms")
    row("keystroke: one character, then top-10", local["keystroke_ms"], served["keystroke_ms"], "ms")
    row("hover: scores of a 100-token text", local["hover_100_tokens_ms"], served["hover_100_tokens_ms"], "ms")
    row("hover: one token near the end, cold", local["hover_one_token_ms"], served["hover_one_token_ms"], "ms")
    row("lens: cost per token", local["lens_ms_per_token"], served["lens_ms_per_token"], "ms")
    row("lens: whole-document pass", local["lens_pass_ms"], served["lens_pass_ms"], "ms",
        " est." if served["lens_pass_estimated"] else "")
    rows.append(f"  {'hover ranks (exact / top-k: bound below / none)':<44}{local['ranks']:>12}{served['ranks']:>12}")
    row("greedy tokens/s (logitls loop / stream)", local["greedy"]["logitls_tok_s"], served["greedy_tok_s"], "")
    row("greedy tokens/s (model.generate)", local["greedy"]["generate_tok_s"], None, "")
    row("greedy: first streamed token", None, served["greedy_first_token_ms"], "ms")
    for message in results["messages"]:
        rows.append(f"  note: {message}")
    return "\n".join(rows)


def main(args) -> int:
    try:
        results = run(args)
    except RuntimeError as exc:
        print(f"logitls: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0
