"""The engine-side measurements (1-3): in this process, on one model."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Callable

SOURCE = Path(__file__).resolve().parents[1] / "engine" / "engine.py"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000, result


def document_of(engine, n_tokens: int) -> str:
    """Real code (logitls's own engine source) cut to about n_tokens tokens."""
    text = SOURCE.read_text()
    while len(engine.tokenizer(text)["input_ids"]) < n_tokens + 50:
        text += "\n" + text
    encoded = engine.tokenizer(text, return_offsets_mapping=True)
    return text[: encoded["offset_mapping"][n_tokens][0]]


TYPED = "    return result  # typed one character at a time\n"


def keystrokes(engine, document: str, key: str, count: int) -> list[float]:
    """Append characters one by one, asking for the top 10 after each, with a warm cache."""
    engine.next_tokens(document, 10, document=key)
    times = []
    for i in range(count):
        document += TYPED[i % len(TYPED)]
        ms, _ = timed(lambda: engine.next_tokens(document, 10, document=key))
        times.append(ms)
    return times


def healed_keystrokes(engine, document: str, key: str, word: str = " result_value", rounds: int = 2) -> dict[str, float]:
    """Typing a word after a space as the server's menu sees it (token healing): the keystroke right after
    the space, and those inside the half-typed word."""
    engine.healed_next_tokens(document, 10, document=key)
    after_space, inside_word = [], []
    for _ in range(rounds):
        typed = document
        for i, char in enumerate(word):
            typed += char
            ms, _ = timed(lambda: engine.healed_next_tokens(typed, 10, document=key))
            (after_space if i == 0 else inside_word).append(ms)
        document = typed + "\n"
    engine.forget(key)
    return {"healed_after_space_ms": statistics.median(after_space), "healed_in_word_ms": statistics.median(inside_word)}


def cold_prefill(engine, document: str, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        engine.forget(f"cold-{i}")
        ms, _ = timed(lambda: engine.next_tokens(document, 10, document=f"cold-{i}"))
        engine.forget(f"cold-{i}")
        times.append(ms)
    return times


def mid_document_edits(engine, document: str, at_token: int, repeats: int) -> list[float]:
    offsets = engine.tokenizer(document, return_offsets_mapping=True)["offset_mapping"]
    times = []
    for i in range(repeats):
        engine.next_tokens(document, 10, document="mid")  # warm on the original
        cut = offsets[at_token + i][0]
        edited = document[:cut] + "x" + document[cut:]
        ms, _ = timed(lambda: engine.next_tokens(edited, 10, document="mid"))
        times.append(ms)
    engine.forget("mid")
    return times


def _decode_rate(stamps: list[float]) -> float:
    """Tokens/s from the first token to the last: decoding only, whatever the prompt cost (llama.cpp's
    server keeps the prompt of the previous request cached, logitls's bench forgets it)."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0


def transformers_reference(engine):
    """transformers' model with the engine's weights, whose `generate` is the anchor a user would pick: the
    engine's own where it runs transformers' forward, else loaded beside the native model for the bench."""
    hf = getattr(engine.model, "hf", None)
    if hf is not None:
        return hf
    from ..engine.loading import load_model

    loaded = engine.loaded
    return load_model(loaded.name, dtype=loaded.dtype, device=loaded.device, weights=loaded.weights,
                      kernel=loaded.kernel or None, forward="transformers").model.hf


def greedy_against_generate(engine, prompt: str, new_tokens: int, repeats: int) -> dict[str, Any]:
    import torch

    ids = torch.tensor([engine.tokenize(prompt).ids], device=engine.device)
    reference = transformers_reference(engine)
    saved_eos = engine.eos_ids
    engine.eos_ids = set()  # both sides run the full length
    try:
        ours, reference_times, decode_rates = [], [], []
        for _ in range(repeats):
            engine.forget("greedy")
            stamps: list[float] = []

            def run() -> list:
                steps = []
                for step in engine.greedy(prompt, max_new_tokens=new_tokens, document="greedy"):
                    stamps.append(time.perf_counter())
                    steps.append(step)
                return steps

            ms, steps = timed(run)
            ours.append(ms)
            decode_rates.append(_decode_rate(stamps))
            with torch.inference_mode():
                ref_ms, output = timed(lambda: reference.generate(
                    ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                    min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0))
            reference_times.append(ref_ms)
    finally:
        engine.eos_ids = saved_eos
        engine.forget("greedy")
    reference_ids = output[0, ids.shape[1]:].tolist()
    ours_ids = [s.token.id for s in steps]
    ours_rate = new_tokens / (min(ours) / 1000)
    reference_rate = new_tokens / (min(reference_times) / 1000)
    return {"new_tokens": new_tokens, "logitls_tok_s": ours_rate, "generate_tok_s": reference_rate,
            "ratio": ours_rate / reference_rate, "identical": ours_ids == reference_ids,
            "decode_tok_s": max(decode_rates)}


def lens_passes(engine, document: str, repeats: int) -> dict[str, float]:
    """The lens's whole-document scoring, as the server runs it (background chunks)."""
    from ..engine.engine import BACKGROUND_CHUNK

    def score(text: str, key: str) -> float:
        ms, _ = timed(lambda: engine.document_scores(text, document=key, chunk_size=BACKGROUND_CHUNK))
        return ms

    cold, end_edit, mid_edit = [], [], []
    middle = len(document) // 2
    for i in range(repeats):
        engine.forget("lens")
        cold.append(score(document, "lens"))
        end_edit.append(score(document + "x" * (i + 1), "lens"))
        score(document, "lens")
        mid_edit.append(score(document[:middle] + "x" + document[middle:], "lens"))
    engine.forget("lens")
    cold_ms = statistics.median(cold)
    return {"lens_cold_ms": cold_ms, "lens_end_edit_ms": statistics.median(end_edit),
            "lens_mid_edit_ms": statistics.median(mid_edit),
            "lens_end_edit_over_cold": statistics.median(end_edit) / cold_ms,
            "lens_mid_edit_over_cold": statistics.median(mid_edit) / cold_ms}


def run_engine_bench(engine, *, doc_tokens: int = 1000, repeats: int = 3, keys: int = 20,
                     greedy_tokens: int = 64) -> dict[str, Any]:
    document = document_of(engine, doc_tokens)
    short = document_of(engine, 16)
    cold = statistics.median(cold_prefill(engine, document, repeats))
    keystroke = statistics.median(keystrokes(engine, document, "keystroke", keys))
    short_step = statistics.median(keystrokes(engine, short, "short", keys))
    healed = healed_keystrokes(engine, document, "healed", rounds=max(1, keys // 10))
    mid = statistics.median(mid_document_edits(engine, document, min(500, doc_tokens // 2), repeats))
    engine.forget("keystroke")
    engine.forget("short")
    greedy = greedy_against_generate(engine, document_of(engine, min(64, engine.context_window // 4)), greedy_tokens,
                                     repeats=2)
    lens = lens_passes(engine, document, repeats)
    return {
        **lens,
        "document_tokens": len(engine.tokenizer(document)["input_ids"]),
        "cold_prefill_ms": cold,
        "keystroke_ms": keystroke,
        "short_step_ms": short_step,
        "keystroke_over_cold": keystroke / cold,
        "keystroke_over_short_step": keystroke / short_step,
        **healed,
        "healed_in_word_over_keystroke": healed["healed_in_word_ms"] / keystroke,
        "mid_edit_ms": mid,
        "mid_edit_over_cold": mid / cold,
        "greedy": greedy,
    }


def setting_profiles(engines: dict[str, Any], document: str, greedy_prompt: str, *, keys: int, greedy_tokens: int,
                     rounds: int = 2, other_greedy: Callable[[], float] | None = None) -> dict[str, dict[str, Any]]:
    """The rows a weights/dtype setting must keep: cold prefill, keystroke and mid-document edit (and
    their ratios), and greedy against model.generate on the same model; for each engine.

    The settings take turns, round after round, and each row keeps its best round: on a shared
    machine other work only ever adds time, and a slow spell then hits every setting alike.
    `other_greedy` (another program's greedy tokens/s, e.g. llama.cpp's) takes its turn in each round too."""
    taken: dict[str, dict[str, list]] = {name: {"cold": [], "keystroke": [], "mid": [], "greedy": []}
                                         for name in engines}
    other_rates: list[float] = []
    for _ in range(rounds):
        for name, engine in engines.items():
            n_tokens = len(engine.tokenizer(document)["input_ids"])
            row = taken[name]
            row["cold"] += cold_prefill(engine, document, 1)
            row["keystroke"].append(statistics.median(keystrokes(engine, document, "profile", keys)))
            engine.forget("profile")
            row["mid"] += mid_document_edits(engine, document, min(500, n_tokens // 2), 1)
            row["greedy"].append(greedy_against_generate(engine, greedy_prompt, greedy_tokens, repeats=1))
        if other_greedy is not None:
            other_rates.append(other_greedy())
    profiles: dict[str, dict[str, Any]] = {"other": {"tok_s": max(other_rates)}} if other_rates else {}
    for name, row in taken.items():
        cold, keystroke, mid = min(row["cold"]), min(row["keystroke"]), min(row["mid"])
        ours = max(g["logitls_tok_s"] for g in row["greedy"])
        reference = max(g["generate_tok_s"] for g in row["greedy"])
        greedy = {"new_tokens": greedy_tokens, "logitls_tok_s": ours, "generate_tok_s": reference,
                  "ratio": ours / reference, "identical": all(g["identical"] for g in row["greedy"]),
                  "decode_tok_s": max(g["decode_tok_s"] for g in row["greedy"])}
        profiles[name] = {"cold_prefill_ms": cold, "keystroke_ms": keystroke, "mid_edit_ms": mid,
                          "keystroke_over_cold": keystroke / cold, "mid_edit_over_cold": mid / cold, "greedy": greedy}
    return profiles
