"""Every setting of logitls, in one typed object: names, defaults, limits and docs.

The editor sends settings in camelCase (``topN``, ``generate.maxNewTokens``) through
``initializationOptions`` and ``workspace/didChangeConfiguration``; the same definitions produce
``client-config/schema.json`` (``logitls schema``) and the README's settings table. Nothing else in
the server has a default of its own.
"""

from __future__ import annotations

import dataclasses
import math
import json
from dataclasses import dataclass, field
from typing import Any, get_type_hints


# Where an editor may take a setting from (VS Code's configuration scopes). Unset: anywhere, a
# repository's workspace settings (`.vscode/settings.json`) included. "machine": the user's own settings
# only, never a workspace's: for settings that run code or decide where a secret goes. "machine-overridable":
# the user's settings, which a trusted workspace may override, an untrusted one (VS Code's Restricted
# Mode) not. Both kinds are listed as restricted configurations for Restricted Mode.
SCOPES = ("machine", "machine-overridable")


def setting(default: Any, doc: str, *, choices: tuple[str, ...] | None = None, minimum: float | None = None,
            maximum: float | None = None, scope: str | None = None) -> Any:
    """One setting. A text setting whose default is empty may be set empty (it means off)."""
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    return field(default=default, metadata={"doc": doc, "choices": choices, "minimum": minimum, "maximum": maximum,
                                            "scope": scope, "may_be_empty": default == ""})


def group(factory: type, doc: str) -> Any:
    return field(default_factory=factory, metadata={"doc": doc, "group": True})


@dataclass(frozen=True)
class CompletionSettings:
    token_healing: bool = setting(True, "Complete what was typed: after a space or inside a half-typed word, back "
                                        "off the tokens it forms and offer only continuations that spell it "
                                        "(`…is ` offers `Paris`, not `2`). Also applies to inline completion and "
                                        "`logitls.generate`. Off: the raw next tokens after the cursor.")


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = setting(0.0, "Sampling temperature for `logitls.generate` and `logitls.branch`: the "
                                      "logits are divided by it before top-k, top-p and min-p. 0 (the default) "
                                      "is greedy, and the other sampling settings are then unused.",
                                 minimum=0, maximum=100)
    top_k: int = setting(0, "Keep only the k likeliest tokens (after temperature); 0 is off, 1 is greedy.",
                         minimum=0, maximum=1_000_000)
    top_p: float = setting(1.0, "Keep the fewest likeliest tokens whose probability (after temperature and "
                                "top-k) reaches this; 1 is off.", minimum=0.0001, maximum=1)
    min_p: float = setting(0.0, "Keep only tokens with at least this fraction of the top token's probability "
                                "(after the samplers before it); 0 is off.", minimum=0, maximum=1)
    seed: int = setting(-1, "Seed of the sampler: the same seed, text and model give the same continuation. "
                            "-1: a fresh seed for each generation.", minimum=-1, maximum=2 ** 31 - 1)


@dataclass(frozen=True)
class GenerateSettings:
    max_new_tokens: int = setting(100, "Tokens the `logitls.generate` command adds at most (the notebook's "
                                       "`max_length=100`).", minimum=1, maximum=4096)
    timeout_seconds: float = setting(60.0, "Wall-clock cap on one greedy generation; what was produced by "
                                           "then is inserted.", minimum=1, maximum=3600)
    sampling: SamplingSettings = group(SamplingSettings, "Sampling instead of greedy decoding (default: greedy). "
                                                         "The completion menu then shows, beside the model's own "
                                                         "p, the p after these samplers.")


@dataclass(frozen=True)
class BranchSettings:
    until: str = setting("line", "Where a branch (the code action \"Use … and continue\", `logitls.branch`) stops "
                                 "regenerating after the alternative token: the end of the line (the rest of the "
                                 "line is replaced), the end of the sentence (the rest of the sentence is "
                                 "replaced), or after `branch.maxNewTokens` tokens (only the token is replaced; "
                                 "the continuation is inserted after it).", choices=("line", "sentence", "tokens"))
    max_new_tokens: int = setting(64, "Tokens a branch generates at most after the alternative token "
                                      "(`generate.timeoutSeconds` caps its time).", minimum=0, maximum=4096)


@dataclass(frozen=True)
class InlineSettings:
    enabled: bool = setting(True, "Offer the greedy continuation as inline ghost text "
                                  "(`textDocument/inlineCompletion`).")
    max_new_tokens: int = setting(16, "Tokens one inline suggestion holds at most.", minimum=1, maximum=256)
    stop_at_end_of_line: bool = setting(True, "End the inline suggestion at the first newline.")


@dataclass(frozen=True)
class LensSettings:
    enabled: bool = setting(True, "Colour every token by its rank under the model, as GLTR does "
                                  "(`textDocument/semanticTokens`): likely (top 10), plausible (top 100), "
                                  "unlikely (top 1000), surprising (beyond).")
    likely_rank: int = setting(10, "Highest rank coloured `likely` (GLTR's top-10 bucket).", minimum=1,
                               maximum=1_000_000)
    plausible_rank: int = setting(100, "Highest rank coloured `plausible`.", minimum=1, maximum=1_000_000)
    unlikely_rank: int = setting(1000, "Highest rank coloured `unlikely`; beyond it, `surprising`.", minimum=1,
                                 maximum=1_000_000)
    view: str = setting("rank", "What the colours show: `rank` (how surprising the written token was: likely, "
                                "plausible, unlikely, surprising) or `entropy` (how unsure the model was at that "
                                "position, whatever was written: confident < 1 bit, leaning < 3, unsure < 6, "
                                "lost from 6 bits) or `compare` (which model found the written token likelier: "
                                "`favoured` by `model` over `lens.compareModel` by 0.1 nats or more, "
                                "`stronglyFavoured` by 1 nat or more, `disfavoured`, `stronglyDisfavoured`).",
                        choices=("rank", "entropy", "compare"))
    compare_model: str = setting("", "A second model to compare with (same tokenizer; anything `model` takes): "
                                     "the hover shows both probabilities and `lens.view: compare` colours each "
                                     "token by which model found it likelier. Empty: off; the second model is "
                                     "loaded only while this is set, with `dtype` and `device`.",
                                 scope="machine-overridable")
    decision_points: bool = setting(False, "Mark decision points, where the model's two favourite next tokens "
                                           "were within `lens.decisionMargin` of each other, as hint diagnostics.")
    decision_margin: float = setting(0.1, "A position is a decision point when p(first choice) - p(second choice) "
                                          "is below this.", minimum=0, maximum=1)
    diagnostics: bool = setting(True, "Report tokens whose surprisal passes `lens.diagnosticMinBits` as diagnostics.")
    diagnostic_min_bits: float = setting(15.0, "Surprisal (bits, -log2 p) from which a token is reported; "
                                               "15 bits is p < 0.00003.", minimum=0, maximum=100)
    diagnostic_severity: str = setting("hint", "Severity of surprise diagnostics.",
                                       choices=("hint", "information", "warning"))
    code_lens: bool = setting(True, "Show perplexity, mean surprisal and token count above the first line.")
    max_document_tokens: int = setting(16384, "Documents with more tokens are not scored (the lens stays empty).",
                                       minimum=1, maximum=1_000_000)
    stride: int = setting(0, "Documents longer than the context window are scored with a sliding window that "
                             "moves this many tokens; 0 means half the window.", minimum=0, maximum=1_000_000)
    debounce_ms: int = setting(300, "Wait this long after an edit before scoring the document again.",
                               minimum=0, maximum=10_000)


@dataclass(frozen=True)
class Settings:
    model: str = setting("default", "The model: `default` (the embedded SmolLM2-135M-Instruct), a local "
                                    "`save_pretrained` folder, a `.gguf` file, or a Hugging Face hub id.",
                         scope="machine-overridable")
    dtype: str = setting("float32", "Weights' precision. Probabilities are always computed in float32.",
                         choices=("float32", "bfloat16", "float16"))
    weights: str = setting("auto", "How the linear layers compute. `packed`: on CPU, straight from a GGUF's own "
                                   "Q4_0/Q4_1/Q8_0 blocks (about 3x faster decoding, the linear layers in a fifth of the memory); "
                                   "logitls's fp32 kernel gives the exact weights' numbers to within the order of "
                                   "additions, and where it cannot be built torch's bf16 int4 kernel moves "
                                   "probabilities slightly (see `logitls bench`'s fidelity table). `exact`: the "
                                   "weights as loaded, in `dtype`. `auto`: packed where the fp32 kernel runs "
                                   "vectorised (x86-64 with AVX2), exact elsewhere (other models, CPUs, GPUs).",
                           choices=("auto", "exact", "packed"))
    device: str = setting("auto", "Where the model runs; `auto` takes a GPU when torch sees one.",
                          choices=("auto", "cpu", "cuda", "mps"))
    threads: int = setting(0, "CPU threads for torch; 0 keeps torch's default.", minimum=0, maximum=256)
    trust_remote_code: bool = setting(False, "Run Python code shipped with a hub model. Off unless you set it.",
                                      scope="machine")
    top_n: int = setting(10, "Next tokens offered in the completion menu.", minimum=1, maximum=1000)
    max_context_tokens: int = setting(0, "Tokens of text before the cursor the model sees at most; 0 means "
                                         "the model's own context window.", minimum=0, maximum=1_000_000)
    hover_alternatives: int = setting(5, "Alternatives the hover lists: the tokens the model preferred.",
                                      minimum=1, maximum=50)
    cached_documents: int = setting(4, "Documents whose KV cache is kept (least recently used dropped "
                                       "first). Each costs about 46 KB per token on the default model in float32.",
                                    minimum=1, maximum=256)
    model_wait_seconds: float = setting(120.0, "How long a request waits for a model that is still loading.",
                                        minimum=0, maximum=3600)
    log_level: str = setting("info", "Least severe message sent to the editor's log "
                                     "(`window/logMessage`) and stderr.", choices=("error", "warning", "info", "debug"))
    backend: str = setting("local", "Where the model runs: `local` (this process, the `model` setting) or `openai` "
                                    "(an OpenAI-compatible `/v1/completions` server such as llama.cpp's or vLLM's, "
                                    "at `endpoint`).", choices=("local", "openai"))
    endpoint: str = setting("http://127.0.0.1:8080/v1", "Base URL of the OpenAI-compatible server (backend `openai`); "
                                                       "`/v1` is added when missing. The documents' text, and the "
                                                       "API key, go there.", scope="machine")
    api_model: str = setting("auto", "Model name sent to the server (backend `openai`); `auto` takes the first "
                                     "model the server lists at `/v1/models`.")
    api_key_env: str = setting("LOGITLS_API_KEY", "Name of the environment variable holding the server's API key, "
                                                  "sent as a Bearer token (backend `openai`) to an `https://` "
                                                  "endpoint, or over `http://` to this machine only. The key itself "
                                                  "never goes in settings; an unset variable sends no key.",
                               scope="machine")
    api_timeout_seconds: float = setting(30.0, "Seconds one request to the server may take (backend `openai`); "
                                               "connection errors and 5xx answers are retried with backoff.",
                                         minimum=0.5, maximum=3600)
    completion: CompletionSettings = group(CompletionSettings, "The completion menu.")
    generate: GenerateSettings = group(GenerateSettings, "The `logitls.generate` command.")
    branch: BranchSettings = group(BranchSettings, "Branching: take an alternative token and continue greedily "
                                                   "(code action and `logitls.branch`).")
    inline: InlineSettings = group(InlineSettings, "Inline completion (ghost text).")
    lens: LensSettings = group(LensSettings, "The surprisal lens: rank colouring, surprise diagnostics, "
                                             "document perplexity.")

    # Settings whose change means loading the model again; the others apply at once.
    RELOAD_FIELDS = ("model", "dtype", "weights", "device", "threads", "trust_remote_code",
                     "backend", "endpoint", "api_model", "api_key_env", "api_timeout_seconds")

    def needs_reload(self, other: "Settings") -> bool:
        return any(getattr(self, name) != getattr(other, name) for name in self.RELOAD_FIELDS)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _check(value: Any, kind: type, meta: dict[str, Any], path: str) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path} must be true or false, got {value!r}")
    elif kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path} must be a number, got {value!r}")
        if not math.isfinite(value):  # Python's JSON reads NaN and Infinity; no comparison refuses them
            raise ValueError(f"{path} must be a finite number, got {value!r}")
        if kind is int:
            if value != int(value):
                raise ValueError(f"{path} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if meta["minimum"] is not None and value < meta["minimum"]:
            raise ValueError(f"{path} must be at least {meta['minimum']:g}, got {value!r}")
        if meta["maximum"] is not None and value > meta["maximum"]:
            raise ValueError(f"{path} must be at most {meta['maximum']:g}, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{path} must be a string, got {value!r}")
        if meta["choices"] and value not in meta["choices"]:
            raise ValueError(f"{path} must be one of {', '.join(meta['choices'])}, got {value!r}")
        if not meta["choices"] and not value.strip() and not meta.get("may_be_empty"):
            raise ValueError(f"{path} must not be empty")
    return value


def _merge(current: Any, wire: Any, path: str, problems: list[str], at_start: bool = True) -> Any:
    if not isinstance(wire, dict):
        problems.append(f"{path or 'logitls settings'} must be an object, got {wire!r}")
        return current
    hints = get_type_hints(type(current))
    by_wire_name = {camel(f.name): f for f in dataclasses.fields(current)}
    changes = {}
    for key, value in wire.items():
        f = by_wire_name.get(key) or next((g for g in dataclasses.fields(current) if g.name == key), None)
        where = f"{path}.{key}" if path else key
        if f is None:
            problems.append(f"unknown setting {where} (ignored)")
            continue
        if value is None:
            continue  # editors send null for "not set": keep what we have
        try:
            if f.metadata.get("group"):
                changes[f.name] = _merge(getattr(current, f.name), value, where, problems, at_start)
            elif not at_start and f.metadata.get("scope") == "machine":
                if value != getattr(current, f.name):
                    problems.append(f"ignored {where} = {value!r}: a setting that runs code or decides where a "
                                    f"secret goes is read once, when the editor starts the server (its "
                                    f"initializationOptions), never from workspace settings; set it there and "
                                    f"restart the server")
            else:
                changes[f.name] = _check(value, hints[f.name], f.metadata, where)
        except ValueError as exc:
            problems.append(f"{exc}; keeping {getattr(current, f.name)!r}")
    return dataclasses.replace(current, **changes)


def merge_settings(current: Settings, wire: Any, *, at_start: bool = True) -> tuple[Settings, list[str]]:
    """Apply settings from the editor over `current`. Invalid values keep the current value and are
    reported in the returned list of problems.

    `at_start` False is for settings that arrive after `initialize` (workspace/configuration,
    didChangeConfiguration). Some editors fill those from a project's own files without asking (Emacs:
    eglot-workspace-configuration in .dir-locals.el is a safe local variable), so a change there to a
    setting scoped to the machine (`trustRemoteCode`, `endpoint`, `apiKeyEnv`) is not applied; it is
    reported as a problem that starts with "ignored"."""
    problems: list[str] = []
    if wire is None:
        return current, problems
    return _merge(current, wire, "", problems, at_start), problems


def json_schema() -> dict[str, Any]:
    """JSON Schema of all settings (client-config/schema.json), in wire names."""

    def properties(cls: type) -> dict[str, Any]:
        hints = get_type_hints(cls)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if meta.get("group"):
                sub = hints[f.name]
                out[camel(f.name)] = {"type": "object", "description": meta["doc"],
                                      "properties": properties(sub), "additionalProperties": False}
                continue
            kind = hints[f.name]
            entry: dict[str, Any] = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}[kind],
                                     "default": f.default, "description": meta["doc"]}
            if meta["choices"]:
                entry["enum"] = list(meta["choices"])
            if meta["minimum"] is not None:
                entry["minimum"] = meta["minimum"]
            if meta["maximum"] is not None:
                entry["maximum"] = meta["maximum"]
            if meta["scope"] is not None:
                entry["scope"] = meta["scope"]  # not JSON Schema: VS Code's keyword, which others ignore
            out[camel(f.name)] = entry
        return out

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "logitls settings",
        "description": "Settings of the logitls language server (section `logitls`; also accepted as "
                       "initializationOptions). Generated by `logitls schema`: do not edit by hand.",
        "type": "object",
        "properties": properties(Settings),
        "additionalProperties": False,
    }


def flat_settings(schema: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(dotted wire name, schema entry) for every leaf setting: for tables and editor manifests."""
    rows: list[tuple[str, dict[str, Any]]] = []

    def walk(props: dict[str, Any], prefix: str) -> None:
        for name, entry in props.items():
            if entry.get("type") == "object":
                walk(entry["properties"], f"{prefix}{name}.")
            else:
                rows.append((prefix + name, entry))

    walk((schema or json_schema())["properties"], "")
    return rows


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
