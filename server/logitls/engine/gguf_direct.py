"""A GGUF whose every matrix the fp32 block kernel reads, loaded straight from the file: no float32 copy
on disk or in memory.

`gguf_tensors` reads the file into the model's parameter names: each matrix as its blocks (rows in the
model's order: llama.cpp permutes Llama's q/k rows, transformers' tensor processor undoes it), each
vector (norms, biases) as float32. `load_packed` builds transformers' model for the file's config on
the meta device and puts them in place: linear layers as BlockLinear (q/k/v and gate/up fused), the
embedding as BlockEmbedding (the looked-up rows dequantized), a tied LM head as BlockLinear on the
embedding's blocks. Every matrix is checked before use: the kernel's dequantization of a sample of its
rows (on this CPU's code path) equals gguf-py's, the loader's own reference.

None where something cannot be packed (a kind the kernel does not read, an unknown architecture, a
tensor left unfilled): the caller then converts to float32 as before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .gguf_file import read_tensors
from .packed import BLOCK_BYTES, Blocks, BlockLinear, apply_packed

logger = logging.getLogger("logitls.engine")
CHECKED_ROWS = 8  # rows of each matrix whose dequantization is compared with gguf-py's before use
FLOAT_TYPES = (0, 1)  # F32, F16


class BlockEmbedding(nn.Module):
    """An embedding table kept as GGUF blocks: a lookup dequantizes the rows it reads, exactly."""

    def __init__(self, blocks: torch.Tensor, kind: int, dim: int) -> None:
        super().__init__()
        self.kind, self.embedding_dim, self.num_embeddings = kind, dim, blocks.shape[0]
        self.register_buffer("blocks", blocks, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.blocks.index_select(0, ids.reshape(-1))
        return torch.ops.logitls.gguf_dequantize(rows, self.kind, self.embedding_dim).view(*ids.shape, -1)


def _file_names(architecture: str, model: nn.Module) -> tuple[dict[str, str], Any]:
    """The file's tensor names to the model's parameter names, and transformers' tensor processor."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    arch = next((key for key, value in MODEL_ARCH_NAMES.items() if value == architecture), None)
    if arch is None:
        return {}, None
    config = model.config
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config={
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "num_key_value_heads": getattr(config, "num_key_value_heads", None)})
    names = get_tensor_name_map(arch, config.num_hidden_layers)
    mapping: dict[str, str] = {}
    for parameter_name, _ in model.named_parameters(remove_duplicate=False):
        module_name, _, suffix = parameter_name.rpartition(".")
        gguf_name = names.get_name(module_name) or names.get_name(module_name.partition(".")[2])
        if gguf_name is not None:
            mapping.setdefault(f"{gguf_name}.{suffix}", parameter_name)
    return mapping, processor


def gguf_tensors(gguf: Path, model: nn.Module) -> dict[str, Blocks | torch.Tensor] | None:
    """The file's tensors by the model's parameter names: matrices as Blocks, vectors as float32
    tensors; None if a tensor is of a kind the kernel does not read or has no place in the model."""
    architecture, file_tensors = read_tensors(gguf)
    mapping, processor = _file_names(architecture, model)
    if processor is None:
        return None
    found: dict[str, Blocks | torch.Tensor] = {}
    for tensor in file_tensors:
        kind = int(tensor.tensor_type)
        raw = tensor.data
        context = {"tensor_key_mapping": mapping, "parsed_parameters": {"tensors": {}, "config": {}}}
        if kind in FLOAT_TYPES:
            values = raw.astype(np.float32)
            result = processor.process(weights=values, name=tensor.name, **context)
            if result.name not in mapping:
                return None
            found[mapping[result.name]] = torch.from_numpy(np.ascontiguousarray(result.weights, dtype=np.float32))
            continue
        if kind not in BLOCK_BYTES or raw.ndim != 2:
            logger.info("direct GGUF load: %s is of ggml type %d, which the kernel does not read", tensor.name, kind)
            return None
        order = np.arange(raw.shape[0], dtype=np.float64).reshape(-1, 1)  # the processor's row permutation
        result = processor.process(weights=order, name=tensor.name, **context)
        if result.name not in mapping or np.shape(result.weights) != order.shape:
            return None
        rows = np.asarray(result.weights).reshape(-1).astype(np.int64)
        blocks = Blocks(kind, raw)
        found[mapping[result.name]] = blocks if np.array_equal(rows, np.arange(len(rows))) else blocks.rows(rows)
    return found


def _checked(name: str, blocks: Blocks) -> bool:
    """The kernel dequantizes a sample of the rows (first, last and spread between) as gguf-py does."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    n, k = blocks.shape
    sample = np.unique(np.linspace(0, n - 1, min(n, CHECKED_ROWS)).astype(np.int64))
    raw = np.ascontiguousarray(blocks.raw[sample])
    reference = torch.from_numpy(dequantize(raw, GGMLQuantizationType(blocks.kind)).reshape(len(sample), k).copy())
    ours = torch.ops.logitls.gguf_dequantize(torch.from_numpy(raw), blocks.kind, k)
    if not torch.equal(ours, reference):
        logger.warning("direct GGUF load: the kernel does not reproduce %s; converting instead", name)
        return False
    return True


def load_packed(gguf: Path) -> tuple[nn.Module, Any] | None:
    """transformers' model for `gguf`, every matrix on its blocks, and its tokenizer; None where the file
    cannot be loaded so (the caller converts it to float32 instead)."""
    from . import kernels

    if not kernels.available():
        return None
    from transformers import AutoModelForCausalLM

    config, tokenizer = _config_and_tokenizer(gguf)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tensors = gguf_tensors(gguf, model)
    if tensors is None:
        return None
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    embedding_name = next(n for n, p in model.named_parameters() if p is embedding.weight)
    tied = head is not None and head.weight is embedding.weight
    layers: dict[str, Blocks] = {}
    for parameter_name, value in tensors.items():
        if isinstance(value, Blocks):
            if not BlockLinear.fits(value) or not _checked(parameter_name, value):
                return None
            if parameter_name != embedding_name:
                layers[parameter_name.removesuffix(".weight")] = value
    modules = dict(model.named_modules())
    head_name = next((n for n, m in modules.items() if m is head), None)
    # build_packed's fusion and bias handling on meta linears: no weight comparison (checked above)
    from .packed import build_packed

    plan = build_packed(model, {n: b for n, b in layers.items() if n in modules}, verify=False)
    # biases come from the file, not from the meta model
    for entry in plan:
        layer = entry["layer"]
        biases = [tensors.get(f"{n}.bias") for n in entry["modules"]]
        if any(b is not None for b in biases):
            if any(b is None for b in biases):
                return None
            layer.bias = torch.cat(biases)
    apply_packed(model, plan)
    embedding_blocks = tensors.get(embedding_name)
    if not isinstance(embedding_blocks, Blocks):
        return None
    raw = torch.from_numpy(np.array(embedding_blocks.raw, dtype=np.uint8))
    _set_module(model, next(n for n, m in modules.items() if m is embedding),
                BlockEmbedding(raw, embedding_blocks.kind, config.hidden_size))
    if tied and head_name is not None:
        _set_module(model, head_name, BlockLinear(raw, embedding_blocks.kind, None, config.hidden_size,
                                                   embedding_blocks.shape[0]))
    for parameter_name, value in tensors.items():  # norms (biases went into the packed layers above)
        if isinstance(value, torch.Tensor) and not parameter_name.endswith(".bias"):
            module_name, _, attribute = parameter_name.rpartition(".")
            setattr(model.get_submodule(module_name), attribute, nn.Parameter(value, requires_grad=False))
    inner = getattr(model, "model", None)
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is not None:  # its buffers are computed at construction: build it again, off the meta device
        inner.rotary_emb = type(rotary)(config=config)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        logger.info("direct GGUF load: nothing in %s for %s", gguf.name, ", ".join(left[:5]))
        return None
    model.eval()
    return model, tokenizer


def _config_and_tokenizer(gguf: Path) -> tuple[Any, Any]:
    """transformers' config and tokenizer for the file, read from it once (seconds: the vocabulary) and
    kept in the cache beside the converted models (a few MB, written whole, then renamed into place)."""
    import os
    import shutil
    import tempfile

    from transformers import AutoConfig, AutoTokenizer

    from .loading import converted_folder

    converted = converted_folder(gguf)
    folder = converted.parent.parent / "gguf-direct" / converted.name
    if not (folder / "config.json").is_file():
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):  # the GGUF's mark; the model here is no quantized one
            del config.quantization_config
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".direct-", dir=folder.parent))
        try:
            config.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            os.replace(staging, folder)
        except OSError:  # another process wrote it first, or the cache is read-only
            shutil.rmtree(staging, ignore_errors=True)
            if not (folder / "config.json").is_file():
                return config, tokenizer
    # always the saved copy, as the converted folder's: transformers' tokenizer read straight from a GGUF
    # can split text differently from the same tokenizer saved and read back (seen with a Qwen2 file)
    return AutoConfig.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)
