"""Models built for the tests: the GPT-2 tokenizer from the notebook, tiny random GPT-2 and Llama
models around it, and the embedded default model for the few tests that need real language."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
NOTEBOOK_TEXT = "Udacity is the best place to learn about generative"
NOTEBOOK_IDS = [52, 67, 4355, 318, 262, 1266, 1295, 284, 2193, 546, 1152, 876]


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
    folders = {"tokenizer": tokenizer_dir}
    for name, model in (("gpt2", gpt2), ("llama", llama)):
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
    folders = {}
    for name, model in (("mistral", mistral), ("gemma2", gemma2)):
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(20.0)
        folder = root / f"tiny-{name}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


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


# -- language server sessions ---------------------------------------------------------------

SERVER_COMMAND = [sys.executable, "-m", "logitls", "serve"]


async def start_session(init_options: dict | None = None, capabilities=None, configuration: dict | None = None,
                        wait_ready: bool = True):
    """Start `logitls serve` over stdio with pytest-lsp's client and initialize it."""
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

    @client.feature("logitls/test/held")
    def _held(params):
        client.held.append(params if isinstance(params, dict) else params._asdict())

    # LOGITLS_TEST_HOOKS: the model thread can be held mid-job (hold_model_thread), no timing needed
    await client.start_io(*SERVER_COMMAND, env=dict(os.environ, HF_HUB_OFFLINE="1", LOGITLS_TEST_HOOKS="1"))
    client.initialize_result = await client.initialize_session(types.InitializeParams(
        capabilities=capabilities or client_capabilities("visual-studio-code"),
        initialization_options=init_options or {},
        root_uri="file:///tmp",
    ))
    if wait_ready:
        await wait_for_status(client, ("ready", "failed"))
    return client


async def wait_for_status(client, states, timeout: float = 120.0, after: int = 0):
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


async def wait_until_held(client, mark: int, timeout: float = 120.0) -> dict:
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


async def wait_until_queued(client, jobs: int = 1, timeout: float = 60.0) -> None:
    """Until at least `jobs` requests wait in the server's model queue (behind a held job)."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (await server_status(client))["queuedJobs"] < jobs:
        if loop.time() > deadline:
            raise TimeoutError(f"fewer than {jobs} jobs ever queued")
        await asyncio.sleep(0.01)


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
