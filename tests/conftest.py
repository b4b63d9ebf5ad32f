"""Models built for the tests: the GPT-2 tokenizer from the notebook, tiny random GPT-2 and Llama
models around it, and the embedded default model for the few tests that need real language."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
NOTEBOOK_TEXT = "Udacity is the best place to learn about generative"
NOTEBOOK_IDS = [52, 67, 4355, 318, 262, 1266, 1295, 284, 2193, 546, 1152, 876]


def tiny_llama_family(architecture: str, seed: int, max_positions: int = 128, hidden_size: int = 64,
                      intermediate_size: int = 128):
    """A tiny random Llama or Qwen2 (q/k/v with biases) on GPT-2's tokenizer, its head tied to the
    embedding and sharpened so that greedy and ranks mean something: (model, tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                  bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = (LlamaForCausalLM(LlamaConfig(**common)) if architecture == "llama"
             else Qwen2ForCausalLM(Qwen2Config(**common)))
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(0, 0.1)
    return model, tokenizer


def block_layers(model, kind, head_kind: int = 8) -> dict:
    """Quantise every linear layer to `kind` (a ggml type id, or a function of the module name giving
    one, for a mix such as Q4_K_M's) and the tied LM head (the embedding) to `head_kind` (Q8_0), and
    give the model those values: its exact weights are then what a GGUF's blocks hold, as with the
    default model. Returns the blocks by module name, for build_packed."""
    import torch

    from logitls.bench.quantize import quantize
    from logitls.engine.packed import Blocks

    layers = {}
    head = model.get_output_embeddings()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                chosen = head_kind if module is head else kind if isinstance(kind, int) else kind(name)
                blocks = Blocks(chosen, quantize(module.weight.detach().float().numpy(), chosen))
                module.weight.copy_(blocks.dequantize())
                layers[name] = blocks
    return layers


@contextmanager
def counting_feeds(engine, fed: list[int]):
    """Record how many tokens each forward feeds (prefill, chunk or decode step: one Model.forward)."""
    original = engine.model.forward

    def forward(tokens, *args, **kwargs):
        fed.append(len(tokens))
        return original(tokens, *args, **kwargs)

    engine.model.forward = forward
    try:
        yield fed
    finally:
        del engine.model.forward


_REFERENCES: dict = {}


def reference_model(engine):
    """transformers' model of what `engine` serves, the reference in tests: the engine's own where it
    runs transformers' forward, else transformers' model of the same folder with the same weights
    (packed the same way where the engine's are), loaded once per engine."""
    if getattr(engine.model, "hf", None) is not None:
        return engine.model.hf
    if id(engine) not in _REFERENCES:
        from logitls.engine.loading import load_model

        loaded = engine.loaded
        reference = load_model(loaded.name, dtype=loaded.dtype, device=loaded.device, weights=loaded.weights,
                               kernel=loaded.kernel or None, forward="transformers")
        assert reference.forward == "transformers" and reference.weights == loaded.weights
        _REFERENCES[id(engine)] = (engine, reference.model.hf)  # the engine held: its id stays its own
    return _REFERENCES[id(engine)][1]


def build_gpt2_tokenizer(**options):
    from transformers import GPT2TokenizerFast

    folder = FIXTURES / "gpt2-tokenizer"
    vocab = json.loads((folder / "encoder.json").read_text())
    lines = (folder / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    # transformers 5 builds an EMPTY tokenizer from vocab_file/merges_file: pass the data itself.
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    return GPT2TokenizerFast(vocab=vocab, merges=merges, **options)


def build_tiny_models(root: Path) -> dict[str, Path]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tokenizer = build_gpt2_tokenizer()
    tokenizer_dir = root / "gpt2-tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)
    eos = tokenizer.eos_token_id
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                      bos_token_id=eos, eos_token_id=eos))
    torch.manual_seed(1)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=64, bos_token_id=eos, eos_token_id=eos,
                                         tie_word_embeddings=True))
    return {"tokenizer": tokenizer_dir, **save_sharpened({"gpt2": gpt2, "llama": llama}, tokenizer, root)}


def save_sharpened(models: dict, tokenizer, root: Path) -> dict[str, Path]:
    """Save random-weight models beside their tokenizer, as `root/tiny-NAME`."""
    import torch

    folders = {}
    for name, model in models.items():
        # Random weights give nearly flat distributions; sharpen them so greedy and ranks mean something.
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(20.0)
        folder = root / f"tiny-{name}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny_engine(request, tiny_models):
    from logitls.engine import Engine

    return Engine.load(str(tiny_models[request.param]), device="cpu")


def build_tiny_sliding_models(root: Path) -> dict[str, Path]:
    """Models whose attention looks back only 16 tokens: Mistral (every layer sliding) and Gemma 2
    (sliding and full layers alternating). Their KV cache drops what falls out of the window."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM, MistralConfig, MistralForCausalLM

    tokenizer = build_gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, sliding_window=16,
                  bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(2)
    mistral = MistralForCausalLM(MistralConfig(**common))
    torch.manual_seed(3)
    gemma2 = Gemma2ForCausalLM(Gemma2Config(**common, head_dim=8))
    return save_sharpened({"mistral": mistral, "gemma2": gemma2}, tokenizer, root)


@pytest.fixture(scope="session")
def tiny_sliding_models(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_sliding_models(tmp_path_factory.mktemp("sliding-models"))


@pytest.fixture(scope="session", params=["mistral", "gemma2"])
def sliding_engine(request, tiny_sliding_models):
    from logitls.engine import Engine

    return Engine.load(str(tiny_sliding_models[request.param]), device="cpu")


@pytest.fixture(scope="session")
def default_engine():
    from logitls.engine import Engine

    return Engine.load("default", device="cpu")


@pytest.fixture(scope="session", autouse=True)
def _offline_hub():
    # The suite must never reach for the network, whatever the machine has.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # A missing fp32 kernel is built inside the load (not in the background), so packed weights are
    # there from the first load whatever cache a test points at.
    os.environ.setdefault("LOGITLS_GGUF_KERNEL", "wait")


# -- language server sessions ---------------------------------------------------------------

SERVER_COMMAND = [sys.executable, "-m", "logitls", "serve"]


def run_logitls(*args: str, stdin: str | None = None, env: dict | None = None, timeout: float = 900):
    """`logitls ARGS…` in a child process of this interpreter, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "logitls", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env=env)


async def start_session(init_options: dict | None = None, capabilities=None, configuration: dict | None = None,
                        wait_ready: bool = True, env: dict | None = None, client_info=None,
                        command: list[str] | None = None, replace_env: bool = False, args: tuple = ()):
    """Start `logitls serve` over stdio with pytest-lsp's client and initialize it.

    `command`: another server command line (an installed `logitls serve`); `replace_env`: `env` is the
    whole environment, not additions to this one; `args`: more arguments for `serve`."""
    from lsprotocol import types
    from pytest_lsp import client_capabilities
    from pytest_lsp.client import make_test_lsp_client

    client = make_test_lsp_client()
    if configuration is not None:
        client.set_configuration(configuration)
    client.statuses = []

    @client.feature("logitls/status")
    def _status(params):
        # pygls hands an unknown notification's params over as a named tuple
        client.statuses.append(params if isinstance(params, dict) else params._asdict())

    client.held = []

    # The client capabilities a test uses (VS Code's) promise these refreshes; answer them as VS Code
    # does, and keep a list of the methods asked for.
    client.refreshes = []
    for refresh in ("workspace/semanticTokens/refresh", "workspace/codeLens/refresh", "workspace/diagnostic/refresh"):
        try:
            client.feature(refresh)(lambda params, method=refresh: client.refreshes.append(method))
        except Exception:  # noqa: BLE001 - pytest-lsp answers workspace/diagnostic/refresh itself
            pass

    @client.feature("logitls/test/held")
    def _held(params):
        client.held.append(params if isinstance(params, dict) else params._asdict())

    # LOGITLS_TEST_HOOKS: the model thread can be held mid-job (hold_model_thread), no timing needed
    await client.start_io(*(command or SERVER_COMMAND), *args, env=dict(env) if replace_env else dict(
        os.environ, HF_HUB_OFFLINE="1", LOGITLS_TEST_HOOKS="1", **(env or {})))
    client.initialize_result = await client.initialize_session(types.InitializeParams(
        capabilities=capabilities or client_capabilities("visual-studio-code"),
        initialization_options=init_options or {},
        root_uri="file:///tmp",
        client_info=client_info,
    ))
    if wait_ready:
        await wait_for_status(client, ("ready", "failed"))
    return client


async def wait_for_status(client, states, timeout: float = 900.0, after: int = 0):
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for status in client.statuses[after:]:
            if status["state"] in states:
                return status["state"]
        await asyncio.sleep(0.05)
    raise TimeoutError(f"server never reached {states}; statuses: {client.statuses}")


def hold_model_thread(client, at_check: int = 0, key_contains: str = "") -> int:
    """Hold the next model job (whose key contains `key_contains`) at its `at_check`-th stop check
    (0: before it starts) until release_model_thread; returns a mark for wait_until_held."""
    client.protocol.notify("logitls/test/hold", {"atCheck": at_check, "keyContains": key_contains})
    return len(client.held)


async def wait_until_held(client, mark: int, timeout: float = 900.0) -> dict:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(client.held) <= mark:
        if loop.time() > deadline:
            raise TimeoutError("the model thread was never held")
        await asyncio.sleep(0.01)
    return client.held[mark]


def release_model_thread(client) -> None:
    client.protocol.notify("logitls/test/release", {})


async def server_status(client) -> dict:
    from lsprotocol import types

    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command="logitls.status"))


async def wait_until_queued(client, jobs: int = 1, timeout: float = 600.0) -> None:
    """Until at least `jobs` requests wait in the server's model queue (behind a held job)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await server_status(client))["queuedJobs"] < jobs:
        if loop.time() > deadline:
            raise TimeoutError(f"fewer than {jobs} jobs ever queued")
        await asyncio.sleep(0.01)


def record_applied_edits(client) -> None:
    """Answer workspace/applyEdit as an editor that applies it, keeping each in client.applied_edits."""
    from lsprotocol import types

    if hasattr(client, "applied_edits"):
        return
    client.applied_edits = []

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply(params: types.ApplyWorkspaceEditParams):
        client.applied_edits.append(params)
        return types.ApplyWorkspaceEditResult(applied=True)


def edits_for(client, uri: str) -> list[list]:
    """Each workspace edit the client was asked to apply to `uri`, as its list of text edits."""
    found = []
    for params in client.applied_edits:
        edit = params.edit
        for change in edit.document_changes or []:
            if change.text_document.uri == uri:
                found.append(list(change.edits))
        if uri in (edit.changes or {}):
            found.append(list(edit.changes[uri]))
    return found


def apply_text_edit(text: str, edit) -> str:
    """The document after an editor applies `edit` (a TextEdit with UTF-16 positions, single-line range)."""
    lines = text.split("\n")

    def offset(position) -> int:
        line = lines[position.line]
        units, index = 0, 0
        while units < position.character and index < len(line):
            units += 2 if ord(line[index]) > 0xFFFF else 1
            index += 1
        return sum(len(l) + 1 for l in lines[: position.line]) + index

    return text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]


def open_document(client, uri: str, text: str, version: int = 1, language: str = "plaintext") -> None:
    from lsprotocol import types

    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))


def engine_for(path):
    from logitls.engine import Engine

    return Engine.load(str(path), device="cpu")


@pytest.fixture(scope="session")
def tiny_gpt2_engine(tiny_models):
    return engine_for(tiny_models["gpt2"])


try:
    import pytest_asyncio

    @pytest_asyncio.fixture(scope="module", loop_scope="session")
    async def tiny_client(tiny_models):
        # The raw view (no token healing): these tests compare the menu with engine.next_tokens.
        client = await start_session({"model": str(tiny_models["gpt2"]), "device": "cpu",
                                      "completion": {"tokenHealing": False}})
        yield client
        await client.shutdown_session()

    @pytest_asyncio.fixture(scope="module", loop_scope="session")
    async def default_client():
        client = await start_session({"model": "default", "device": "cpu"})
        yield client
        await client.shutdown_session()
except ImportError:  # pragma: no cover - the test extra is always installed by `make test`
    pass


# -- the wire itself: raw JSON-RPC bodies, and every answer the server gives ----------------

class Wire:
    """Writes bodies to a running server's stdin exactly as given (framed with Content-Length) and
    records every response the server sends, by id, including those to requests the client never
    made through pygls. Answers with `"id": null` are kept apart."""

    def __init__(self, client) -> None:
        import asyncio
        from collections import defaultdict

        self.client = client
        self.answers: dict = defaultdict(list)  # id -> [(result, error)]
        self.null_answers: list = []  # errors the server could not tie to a request
        self._changed = asyncio.Event()
        protocol = client.protocol
        original = protocol._handle_response

        def record(msg_id, result=None, error=None):
            if msg_id is None:
                self.null_answers.append(error)
            else:
                self.answers[msg_id].append((result, error))
            self._changed.set()
            return original(msg_id, result, error)

        protocol._handle_response = record

    def send(self, body) -> None:
        import json

        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.client.protocol.writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def send_raw(self, data: bytes) -> None:
        """Bytes as they are, framing and all."""
        self.client.protocol.writer.write(data)

    async def until(self, ids, nulls: int = 0, timeout: float = 600.0) -> None:
        """Wait until every id in `ids` has an answer and `nulls` id-null answers came."""
        import asyncio

        async def wait():
            while not (all(self.answers.get(i) for i in ids) and len(self.null_answers) >= nulls):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            missing = [i for i in ids if not self.answers.get(i)]
            raise AssertionError(f"no answer to {missing}; {len(self.null_answers)} of {nulls} id-null answers") from None

    async def round_trip(self) -> None:
        """One request the server answers at once, in order: whatever it answered synchronously to
        the messages before has arrived once this returns."""
        marker = f"round-trip-{id(self)}-{len(self.answers)}"
        self.send({"jsonrpc": "2.0", "id": marker, "method": "logitls/no-such-method"})
        await self.until([marker])

    def code(self, msg_id) -> int | None:
        [(result, error)] = self.answers[msg_id]
        return None if error is None else error.code


async def server_text_is(client, uri: str, text: str, engine) -> None:
    """Assert the server holds `text` for `uri`: its documentStats (token count, perplexity) equal the
    engine's on `text` here. Any other text tokenizes differently and scores differently."""
    import math

    import pytest
    from lsprotocol import types
    from pygls.exceptions import JsonRpcException

    from logitls.lens import document_stats

    ids = engine.tokenizer(text)["input_ids"] if text else []
    try:
        stats = await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="logitls.documentStats", arguments=[{"textDocument": {"uri": uri}}]))
    except JsonRpcException:
        assert not ids, f"the server could not score {text!r}"
        return
    assert stats["tokens"] == len(ids), f"the server's text is not {text!r}: {stats}"
    expected = document_stats(engine.document_scores(text)).perplexity
    if expected is None:
        assert stats["perplexity"] is None, f"the server's text is not {text!r}: {stats}"
    else:
        assert math.log(stats["perplexity"]) == pytest.approx(math.log(expected), rel=1e-3, abs=1e-3), \
            f"the server's text is not {text!r}: {stats}"


# -- what the client holds: the reference text document ------------------------------------------

class ReferenceDocument:
    """vscode-languageserver-textdocument's TextDocument (the reference LSP clients follow), over the
    code units of the position encoding as JavaScript works over UTF-16 units: lines end at \\n,
    \\r\\n or \\r; a position past a line's end (or between \\r and \\n) means the line's end; a line
    past the end means the end of the text; a reversed range is put right. Positions given to it must
    not cut a character in two (JavaScript could hold the halves; a Python str cannot)."""

    CODECS = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2), "utf-32": ("utf-32-le", 4)}

    def __init__(self, text: str, encoding: str = "utf-16") -> None:
        self.codec, self.width = self.CODECS[encoding]
        self.units = self._units(text)

    def _units(self, text: str) -> list[int]:
        data = text.encode(self.codec, "surrogatepass")
        return [int.from_bytes(data[i:i + self.width], "little") for i in range(0, len(data), self.width)]

    @property
    def text(self) -> str:
        return b"".join(u.to_bytes(self.width, "little") for u in self.units).decode(self.codec, "surrogatepass")

    def line_offsets(self) -> list[int]:
        units, offsets, i = self.units, [0], 0
        while i < len(units):
            if units[i] in (10, 13):
                if units[i] == 13 and i + 1 < len(units) and units[i + 1] == 10:
                    i += 1
                offsets.append(i + 1)
            i += 1
        return offsets

    def offset_at(self, line: int, character: int) -> int:
        offsets = self.line_offsets()
        if line >= len(offsets):
            return len(self.units)
        if line < 0:
            return 0
        line_offset = offsets[line]
        if character <= 0:
            return line_offset
        next_offset = offsets[line + 1] if line + 1 < len(offsets) else len(self.units)
        offset = min(line_offset + character, next_offset)
        while offset > line_offset and self.units[offset - 1] in (10, 13):
            offset -= 1
        return offset

    def position_at(self, offset: int) -> tuple[int, int]:
        from bisect import bisect_right

        offsets = self.line_offsets()
        line = bisect_right(offsets, offset) - 1
        return line, offset - offsets[line]

    def boundaries(self) -> list[int]:
        """Unit offsets that do not cut a character."""
        out, offset = [0], 0
        for char in self.text:
            offset += len(char.encode(self.codec, "surrogatepass")) // self.width
            out.append(offset)
        return out

    def apply(self, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        if start > end:
            start, end = end, start
        a, b = self.offset_at(*start), self.offset_at(*end)
        self.units[a:b] = self._units(text)
