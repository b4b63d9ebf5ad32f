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


def progress(message: str) -> None:
    """Where a long run is (on stderr: stdout carries the table or the JSON)."""
    print(f"logitls bench: {message}", file=sys.stderr, flush=True)


def cpu_bf16_support() -> str:
    """The CPU's bf16 instructions, as /proc/cpuinfo names them ("" where it has none)."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((l.split(":", 1)[1].split() for l in info if l.startswith("flags")), [])
    except OSError:
        return ""
    return " ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags)


# The settings compared in every run: (dtype, weights, packed kernel). The exact float32 one is the reference.
SETTINGS = (("float32", "exact", None), ("float32", "packed", "fp32"), ("float32", "packed", "bf16"),
            ("bfloat16", "exact", None))


def setting_name(dtype: str, weights: str, kernel: str | None) -> str:
    return f"{weights} {dtype}" + (f", {kernel} kernel" if kernel else "")


def run(model: str, dtype: str, device: str, threads: int, quick: bool, lsp: bool,
        weights: str = "auto") -> dict[str, Any]:
    from ..engine import Engine

    engine = Engine.load(model, dtype=dtype, device=device, threads=threads, weights=weights)
    doc_tokens = min(1000, max(24, engine.context_window - 80))
    results: dict[str, Any] = {"model": model, "dtype": dtype, "weights": engine.loaded.weights,
                               "kernel": engine.loaded.kernel or None,
                               "device": engine.loaded.device, "machine": machine(),
                               "cpu_bf16": cpu_bf16_support(), "command": " ".join(["logitls", *sys.argv[2:]])}
    progress(f"engine rows ({engine.loaded.dtype}, {engine.loaded.weights} weights)")
    results.update(run_engine_bench(engine, doc_tokens=doc_tokens, repeats=1 if quick else 3,
                                    keys=5 if quick else 20, greedy_tokens=min(64, engine.context_window // 4)))
    results["settings"] = compare_settings(engine, model, device, threads, doc_tokens, quick)
    if lsp:
        long_tokens = min(2000, engine.context_window - 16)
        base = document_of(engine, long_tokens)
        longs = [f"# document {n}\n" + base for n in range(3 if quick else 10)]
        progress("the language server over stdio")
        served = run_lsp_bench(model, dtype, threads, document_of(engine, doc_tokens), longs, keys=5 if quick else 20,
                               weights=weights)
        served["lsp_overhead"] = served["lsp_keystroke_ms"] / results["keystroke_ms"] - 1
        results["lsp"] = served
    results["goals"] = goals(results)
    return results


def compare_settings(engine, model: str, device: str, threads: int, doc_tokens: int, quick: bool) -> dict[str, Any]:
    """Each setting of SETTINGS on the same document and prompt: speed rows, fidelity against exact
    float32, and llama.cpp's greedy rate on the same GGUF."""
    from ..engine import Engine
    from ..engine.loading import gguf_of
    from .engine_bench import setting_profiles
    from .fidelity import compare

    document = document_of(engine, doc_tokens)
    greedy_tokens = min(64, engine.context_window // 4)
    prompt = document_of(engine, min(64, engine.context_window // 4))
    engines, skipped = {}, {}
    for setting in SETTINGS:
        dtype, weights, kernel = setting
        if (engine.loaded.dtype, engine.loaded.weights, engine.loaded.kernel or None) == setting:
            engines[setting] = engine
            continue
        progress(f"loading {setting_name(*setting)}")
        other = Engine.load(model, dtype=dtype, device=device, threads=threads, weights=weights, kernel=kernel)
        if (other.loaded.weights, other.loaded.kernel or None) == (weights, kernel):
            engines[setting] = other
        else:  # packed where the model has no 4-bit codes, or the fp32 kernel is not built: nothing to compare
            skipped[setting_name(*setting)] = {"skipped": other.loaded.note or "not available here"}
    reference = engines[SETTINGS[0]]
    named = {setting_name(*setting): candidate for setting, candidate in engines.items()}
    from contextlib import ExitStack

    from . import llama_server

    gguf = gguf_of(model)
    why_not = llama_server.available() if gguf is not None else "the model is not a GGUF file"
    if why_not is None and engine.loaded.device != "cpu":
        why_not = "measured on CPU only"
    with ExitStack() as stack:
        other_greedy = None
        if why_not is None:
            import torch

            progress("starting llama.cpp's server on the same GGUF")
            try:
                server = stack.enter_context(llama_server.LlamaServer(gguf, torch.get_num_threads()))
                other_greedy = lambda: server.greedy_tok_s(prompt, greedy_tokens)  # noqa: E731
            except RuntimeError as exc:
                why_not = str(exc)
        progress("speed of each setting" + (" and of llama.cpp" if other_greedy else "") + ", in turns")
        section: dict[str, Any] = setting_profiles(named, document, prompt, keys=5 if quick else 10,
                                                   greedy_tokens=greedy_tokens, rounds=2 if quick else 3,
                                                   other_greedy=other_greedy)
    section["llama.cpp"] = section.pop("other", None) or {"skipped": why_not}
    for name, candidate in named.items():
        if candidate is not reference:
            progress(f"fidelity of {name}")
            section[name]["fidelity"] = compare(reference, candidate)
    section.update(skipped)
    engines.clear()  # the extra models go before the language server's process starts
    named.clear()
    return section


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal of the speed work with its measured ratio and whether it is met (None: not measured)."""
    rows: list[dict[str, Any]] = []

    def goal(label: str, value: float | None, target: str, met: bool | None) -> None:
        rows.append({"goal": label, "value": value, "target": target, "met": met})

    settings = results["settings"]
    for name, row in settings.items():
        if "greedy" not in row:
            continue
        g = row["greedy"]
        goal(f"greedy / model.generate, {name} (identical tokens: {'yes' if g['identical'] else 'NO'})",
             g["ratio"], "≥ 1.1", g["ratio"] >= 1.1 and g["identical"])
        goal(f"keystroke / cold prefill, {name}", row["keystroke_over_cold"], "≤ 0.05",
             row["keystroke_over_cold"] <= 0.05)
        goal(f"mid-document edit / cold prefill, {name}", row["mid_edit_over_cold"], "≤ 0.6",
             row["mid_edit_over_cold"] <= 0.6)
    fast = [(row["greedy"]["decode_tok_s"], name) for name, row in settings.items()
            if "greedy" in row and row.get("fidelity", {"meets_bar": True})["meets_bar"]]
    llama = settings.get("llama.cpp", {})
    if fast and "tok_s" in llama:
        rate, name = max(fast)
        goal(f"greedy decode, fastest setting within the fidelity bar ({name}) / llama.cpp", rate / llama["tok_s"],
             "≥ 1.0", rate >= llama["tok_s"])
    else:
        goal(f"greedy / llama.cpp: skipped ({llama.get('skipped', 'not measured')})", None, "≥ 1.0", None)
    fp32, bf16 = settings.get("exact float32"), settings.get("exact bfloat16")
    if fp32 and bf16:
        where = f"CPU has {results['cpu_bf16']}" if results["cpu_bf16"] else "CPU has no bf16 instructions"
        prefill = fp32["cold_prefill_ms"] / bf16["cold_prefill_ms"]
        decode = bf16["greedy"]["logitls_tok_s"] / fp32["greedy"]["logitls_tok_s"]
        goal(f"bf16 speed-up over fp32, cold prefill ({where})", prefill, "≥ 1.0", prefill >= 1.0)
        goal(f"bf16 speed-up over fp32, greedy decode ({where})", decode, "≥ 1.0", decode >= 1.0)
    for name, row in settings.items():
        if "fidelity" in row:
            f = row["fidelity"]
            goal(f"{name} against exact float32: mean KL (nats) / top-1 agreement {f['top1_agreement']:.2%}",
                 f["mean_kl"], "< 1e-3 and ≥ 99.5 %", f["meets_bar"])
    if "lsp" in results:
        first = results["lsp"]["first_completion_ms"]
        goal("first answer: process start → first completion (ms)", first, "≤ 2000", first <= 2000)
    return rows


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
    rows = [f"logitls bench: {results['model']} ({results['dtype']}, {results['weights']} weights, "
            f"{results['device']}) on {results['machine']}",
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
        by = f"   ({s['first_forward']} forward)" if s.get("first_forward") else ""
        rows.append(f"  {'cold start: process → first completion':<44}{s['first_completion_ms']:8.1f} ms" + by)
        if s["peak_rss_mb"] is not None:
            rows.append(f"  {'peak RSS, 10 open 2000-token documents':<44}{s['peak_rss_mb']:8.0f} MB   goal ≤ 1500 MB")
    if "compare" in results:
        c = results["compare"]
        rows.append(f"  {'--compare ' + c['model'] + ' (' + c['dtype'] + '): extra RSS':<44}{c['extra_rss_mb']:8.0f} MB")
        rows.append(f"  {'both models scoring a 500-token text':<44}{c['both_scored_ms']:8.1f} ms")
    rows += ["", settings_table(results)]
    return "\n".join(rows)


def settings_table(results: dict[str, Any]) -> str:
    settings = results["settings"]
    rows = ["settings, same document and prompt (ms; tokens/s: greedy and model.generate with the prompt's",
            "prefill, decode from the first token to the last):",
            f"  {'':<30}{'cold':>9}{'keystroke':>11}{'mid edit':>10}{'greedy':>9}{'generate':>10}{'decode':>9}"]
    for name, row in settings.items():
        if "greedy" in row:
            g = row["greedy"]
            rows.append(f"  {name:<30}{row['cold_prefill_ms']:9.1f}{row['keystroke_ms']:11.1f}{row['mid_edit_ms']:10.1f}"
                        f"{g['logitls_tok_s']:9.1f}{g['generate_tok_s']:10.1f}{g['decode_tok_s']:9.1f}")
        elif name != "llama.cpp":
            rows.append(f"  {name:<30}  skipped: {row['skipped']}")
    llama = settings.get("llama.cpp", {})
    rows.append(f"  {'llama.cpp server':<30}" + (f"{'':>49}{llama['tok_s']:9.1f}" if "tok_s" in llama
                                                  else f"  skipped: {llama.get('skipped')}"))
    rows += ["", "fidelity against exact float32 (fixed code, prose and chat texts):",
             f"  {'':<30}{'positions':>10}{'mean KL':>10}{'p99 KL':>10}{'top-1':>9}{'worst top-10 |Δp|':>19}"]
    for name, row in settings.items():
        if "fidelity" in row:
            f = row["fidelity"]
            rows.append(f"  {name:<30}{f['positions']:10d}{f['mean_kl']:10.2e}{f['p99_kl']:10.2e}"
                        f"{f['top1_agreement']:9.2%}{f['worst_top_n_abs_error']:19.4f}"
                        f"  {'meets the bar' if f['meets_bar'] else 'misses the bar (KL < 1e-3, top-1 ≥ 99.5 %)'}")
    rows += ["", "goals:"]
    for g in results["goals"]:
        value = "—" if g["value"] is None else (f"{g['value']:.2e}" if abs(g["value"]) < 0.01 else f"{g['value']:.3f}")
        met = {True: "met", False: "NOT met", None: "not measured"}[g["met"]]
        rows.append(f"  {g['goal']:<92}{value:>10}  {g['target']:<20}{met}")
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
    results = run(args.model, args.dtype, args.device, args.threads, args.quick, not args.no_lsp,
                  weights=getattr(args, "weights", "exact"))
    if getattr(args, "compare", None):
        results["compare"] = compare_cost(args)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0
