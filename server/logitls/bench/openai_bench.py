"""`logitls bench --backend openai --endpoint URL`: the openai backend (an OpenAI-compatible server)
side by side with the local backend, in one run on one machine, on the same ~1000-token document:

- cold: the first top-10 request for the document (a unique first line defeats the server's prompt
  cache; the local engine forgets its KV cache);
- keystroke: one character appended, then the top 10 again (the server's prompt cache and the local
  KV cache both warm);
- greedy tokens/s over 64 new tokens (the server streams; locally, logitls's loop and model.generate);
- hover: per-token scores of a 100-token text (the server's `echo` with `logprobs`).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from typing import Any

from .engine_bench import TYPED, document_of, run_engine_bench, timed


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
    return {"cold_prefill_ms": statistics.median(cold), "keystroke_ms": statistics.median(strokes),
            "greedy_tok_s": max(rates), "greedy_first_token_ms": min(first_token), "greedy_tokens": count,
            "hover_100_tokens_ms": hover_ms if scores.tokens else None}


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
    served = remote_measurements(remote, document, short, greedy_prompt, repeats=repeats, keys=keys,
                                 new_tokens=new_tokens)
    remote.close()
    return {"machine": machine(), "command": " ".join(["logitls", *sys.argv[2:]]),
            "document_tokens": len(engine.tokenizer(document)["input_ids"]),
            "local": {"model": args.model, "dtype": args.dtype, "device": engine.loaded.device, **local},
            "openai": {"endpoint": remote.base_url, "model": remote.model_name, "server": remote.server_kind,
                       "top_n_cap": remote.top_n_cap, "echo": remote.echo_supported, **served},
            "messages": messages}


def table(results: dict[str, Any]) -> str:
    local, served = results["local"], results["openai"]
    rows = [f"logitls bench --backend openai: {served['server']} at {served['endpoint']} ({served['model']})",
            f"  against local {local['model']} ({local['dtype']}, {local['device']}) on {results['machine']}",
            f"document: {results['document_tokens']} tokens", "",
            f"  {'':<44}{'local':>12}{'openai':>12}"]

    def row(label: str, a: float | None, b: float | None, unit: str) -> None:
        show = lambda v: f"{'—':>9}   " if v is None else f"{v:9.1f}{unit:>3}"
        rows.append(f"  {label:<44}{show(a)}{show(b)}")

    row("cold: first top-10 for the document", local["cold_prefill_ms"], served["cold_prefill_ms"], "ms")
    row("keystroke: one character, then top-10", local["keystroke_ms"], served["keystroke_ms"], "ms")
    row("hover: scores of a 100-token text", local["hover_100_tokens_ms"], served["hover_100_tokens_ms"], "ms")
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
