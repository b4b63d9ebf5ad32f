"""`logitls bench` entry point: run everything once, print a table (or JSON)."""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

from .engine_bench import document_of, run_engine_bench
from .lsp_bench import run_lsp_bench


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(l.split(":", 1)[1].strip() for l in info if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu
    return f"{device}; {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def run(model: str, dtype: str, device: str, threads: int, quick: bool, lsp: bool) -> dict[str, Any]:
    from ..engine import Engine

    engine = Engine.load(model, dtype=dtype, device=device, threads=threads)
    doc_tokens = min(1000, max(24, engine.context_window - 80))
    results: dict[str, Any] = {"model": model, "dtype": dtype, "device": engine.loaded.device,
                               "machine": machine(), "command": " ".join(["logitls", *sys.argv[2:]])}
    results.update(run_engine_bench(engine, doc_tokens=doc_tokens, repeats=1 if quick else 3,
                                    keys=5 if quick else 20, greedy_tokens=min(64, engine.context_window // 4)))
    if lsp:
        long_tokens = min(2000, engine.context_window - 16)
        base = document_of(engine, long_tokens)
        longs = [f"# document {n}\n" + base for n in range(3 if quick else 10)]
        served = run_lsp_bench(model, dtype, threads, document_of(engine, doc_tokens), longs, keys=5 if quick else 20)
        served["lsp_overhead"] = served["lsp_keystroke_ms"] / results["keystroke_ms"] - 1
        results["lsp"] = served
    return results


GOALS = [
    ("keystroke, ~1000-token document", "keystroke_ms", "ms", None),
    ("cold prefill of that document", "cold_prefill_ms", "ms", None),
    ("keystroke / cold prefill", "keystroke_over_cold", "ratio", "≤ 0.05"),
    ("keystroke / step on a 16-token document", "keystroke_over_short_step", "ratio", "≤ 2"),
    ("healed keystroke right after a space", "healed_after_space_ms", "ms", None),
    ("healed keystroke inside a word", "healed_in_word_ms", "ms", None),
    ("healed in-word keystroke / raw keystroke", "healed_in_word_over_keystroke", "ratio", "≤ 1.5"),
    ("mid-document edit at token 500", "mid_edit_ms", "ms", None),
    ("mid-document edit / cold prefill", "mid_edit_over_cold", "ratio", "≤ 0.6"),
    ("lens pass, cold", "lens_cold_ms", "ms", None),
    ("lens pass after a 1-char edit at the end", "lens_end_edit_ms", "ms", None),
    ("lens pass after a 1-char edit in the middle", "lens_mid_edit_ms", "ms", None),
    ("lens end edit / lens cold", "lens_end_edit_over_cold", "ratio", "≤ 0.1"),
    ("lens middle edit / lens cold", "lens_mid_edit_over_cold", "ratio", None),
]


def table(results: dict[str, Any]) -> str:
    rows = [f"logitls bench: {results['model']} ({results['dtype']}, {results['device']}) on {results['machine']}",
            f"document: {results['document_tokens']} tokens", ""]
    for label, key, unit, goal in GOALS:
        value = results[key]
        shown = f"{value:8.1f} ms" if unit == "ms" else f"{value:8.3f}   "
        rows.append(f"  {label:<44}{shown}  {('goal ' + goal) if goal else ''}")
    g = results["greedy"]
    rows.append(f"  {'greedy, logitls loop (tokens/s)':<44}{g['logitls_tok_s']:8.1f}")
    rows.append(f"  {'greedy, model.generate (tokens/s)':<44}{g['generate_tok_s']:8.1f}")
    rows.append(f"  {'greedy ratio (logitls / generate)':<44}{g['ratio']:8.3f}     goal ≥ 1.0 (stretch 1.1)")
    rows.append(f"  {'greedy tokens identical':<44}{'yes' if g['identical'] else 'NO':>8}")
    if "lsp" in results:
        s = results["lsp"]
        rows.append(f"  {'keystroke through the LSP (stdio)':<44}{s['lsp_keystroke_ms']:8.1f} ms")
        rows.append(f"  {'LSP overhead over the engine call':<44}{s['lsp_overhead'] * 100:7.1f} %   goal ≤ 10%")
        rows.append(f"  {'cold start: process → initialize answered':<44}{s['initialize_ms']:8.1f} ms")
        rows.append(f"  {'cold start: process → first completion':<44}{s['first_completion_ms']:8.1f} ms")
        if s["peak_rss_mb"] is not None:
            rows.append(f"  {'peak RSS, 10 open 2000-token documents':<44}{s['peak_rss_mb']:8.0f} MB   goal ≤ 1500 MB")
    if "compare" in results:
        c = results["compare"]
        rows.append(f"  {'--compare ' + c['model'] + ' (' + c['dtype'] + '): extra RSS':<44}{c['extra_rss_mb']:8.0f} MB")
        rows.append(f"  {'both models scoring a 500-token text':<44}{c['both_scored_ms']:8.1f} ms")
    return "\n".join(rows)


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as status:
            return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:")) / 1024
    except (OSError, StopIteration):
        return None


def compare_cost(args) -> dict[str, Any]:
    """What `--compare MODEL` (lens.compareModel) costs: the second model's memory and a scoring pass of both."""
    import time

    from ..engine import Engine
    from ..engine.compare import compare_scores

    main = Engine.load(args.model, dtype=args.dtype, device=args.device, threads=args.threads)
    before = _rss_mb()
    other = Engine.load(args.compare, dtype=args.compare_dtype or args.dtype, device=args.device, threads=args.threads)
    after = _rss_mb()
    text = document_of(main, min(500, main.context_window - 80))
    started = time.perf_counter()
    compare_scores(main, other, text)
    return {"model": args.compare, "dtype": args.compare_dtype or args.dtype,
            "extra_rss_mb": None if before is None or after is None else after - before,
            "both_scored_ms": (time.perf_counter() - started) * 1000}


def main(args) -> int:
    if getattr(args, "backend", "local") == "openai":  # side by side with the local backend
        from .openai_bench import main as openai_main

        return openai_main(args)
    results = run(args.model, args.dtype, args.device, args.threads, args.quick, not args.no_lsp)
    if getattr(args, "compare", None):
        results["compare"] = compare_cost(args)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0
