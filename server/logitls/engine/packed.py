"""Packed weights: a GGUF's own quantised blocks computed on directly, not dequantized.

The default model's GGUF stores every linear layer as Q4_1 (blocks of 32 weights: value = d·q + m,
q in 0..15) and its tied embedding / LM head as Q8_0; the "exact" model is those values dequantized
to fp32: every decode step reads 4 bytes a weight where the file holds 0.6 (Q4_1) or 1.06 (Q8_0).

Two kernels read the blocks:
- "fp32" (kernels/gguf_linear.cpp, built at install): the blocks as the file stores them (Q4_0,
  Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q4_K, Q5_K, Q6_K that Q4_K_M/Q5_K_M files mix), the
  weights dequantized in registers to their exact fp32 values, fp32 inputs and sums. Its numbers
  differ from the exact path's only in the order of the additions; the LM head runs on the Q8_0
  blocks too. Many input rows (a prefill) use the dense weights' GEMM, bit for bit the exact path.
- "bf16" (torch's `_weight_int4pack_mm_for_cpu`, group size 32, Q4 layers only), where the fp32
  kernel cannot be built: it computes with `(q - 8)·scale + zero`, so a Q4_1 block is `scale = d,
  zero = m + 8d` and a Q4_0 block `scale = d, zero = 0`; but it rounds its input, scales and output
  to bf16 (it is vectorised for bf16 input only), which moves the numbers: `logitls bench` measures
  by how much.

Each packed layer is checked against the loaded model's own weight (the GGUF's values as
transformers dequantized them), for the fp32 kernel through the kernel's own dequantization on this
CPU's code path: a layer whose codes do not reproduce it exactly stays exact. The
packed layers are written once beside the converted model (the bf16 kernel's layout per CPU
capability: it differs between AVX-512, AVX2 and plain builds), so a later start only maps them in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .gguf_file import BLOCK_BYTES, BLOCK_WEIGHTS, read_tensors

logger = logging.getLogger("logitls.engine")
GROUP = 32  # weights per Q4_0..Q8_0 block, and the int4 kernel's group size
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = 2, 3, 6, 7, 8  # ggml type ids (gguf.GGMLQuantizationType)
Q4_K, Q5_K, Q6_K = 12, 13, 14
Q4_KINDS = (Q4_0, Q4_1)
KERNELS = ("fp32", "bf16")
# Above this many input rows the fp32 kernel's layer uses a GEMM on dense weights (kept where they are
# shared anyway, as a tied LM head's with the embedding); the C++ side dequantizes for it otherwise.
DENSE_ROWS = 16
# Sibling projections that read the same input: one kernel call computes all of them.
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


@dataclass
class Blocks:
    """One linear layer's blocks as the GGUF stores them: rows of `K / BLOCK_WEIGHTS[kind]` blocks."""

    kind: int  # a key of BLOCK_BYTES
    raw: np.ndarray  # uint8 [N, K / BLOCK_WEIGHTS[kind] * BLOCK_BYTES[kind]]

    @property
    def shape(self) -> tuple[int, int]:
        return self.raw.shape[0], self.raw.shape[1] // BLOCK_BYTES[self.kind] * BLOCK_WEIGHTS[self.kind]

    def rows(self, order: np.ndarray) -> "Blocks":
        return Blocks(self.kind, self.raw[order])

    def unpack(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """codes (int32 [N, K], 0..15), scale and zero (fp32 [N, K / 32]) with value = (q - 8)·scale + zero."""
        assert self.kind in Q4_KINDS, "only Q4 blocks unpack to 4-bit codes"
        n, k = self.shape
        blocks = torch.from_numpy(np.ascontiguousarray(self.raw)).view(n, k // GROUP, BLOCK_BYTES[self.kind])
        d = blocks[..., 0:2].contiguous().view(torch.float16).squeeze(-1).float()
        if self.kind == Q4_1:
            m = blocks[..., 2:4].contiguous().view(torch.float16).squeeze(-1).float()
            zero, qs = m + 8 * d, blocks[..., 4:]
        else:
            zero, qs = torch.zeros_like(d), blocks[..., 2:]
        # a block's byte j holds weight j in its low nibble and weight j + 16 in its high one
        codes = torch.cat([qs & 0x0F, qs >> 4], dim=-1).reshape(n, k).to(torch.int32)
        return codes, d, zero

    def dequantize(self) -> torch.Tensor:
        """The fp32 values, computed as transformers' GGUF loader does (d·q + m in fp32)."""
        n, k = self.shape
        if self.kind not in (Q4_0, Q4_1, Q8_0):  # gguf-py's own dequantizer: the one the loader calls
            from gguf import GGMLQuantizationType
            from gguf.quants import dequantize

            raw = np.ascontiguousarray(self.raw)
            return torch.from_numpy(dequantize(raw, GGMLQuantizationType(self.kind)).reshape(n, k).copy())
        if self.kind == Q8_0:
            blocks = torch.from_numpy(np.ascontiguousarray(self.raw)).view(n, k // GROUP, BLOCK_BYTES[Q8_0])
            d = blocks[..., 0:2].contiguous().view(torch.float16).float()
            return (blocks[..., 2:].contiguous().view(torch.int8).float() * d).view(n, k)
        codes, scale, zero = self.unpack()
        grouped = codes.view(n, k // GROUP, GROUP).float()
        if self.kind == Q4_1:
            return (grouped * scale[..., None] + (zero - 8 * scale)[..., None]).view(n, k)
        return ((grouped - 8) * scale[..., None]).view(n, k)


class PackedLinear(nn.Module):
    """A linear layer (or several sharing their input, see FUSED_GROUPS) computed by torch's int4 kernel."""

    kernel = "bf16"

    def __init__(self, packed: torch.Tensor, scales_zeros: torch.Tensor, bias: torch.Tensor | None,
                 in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("packed", packed, persistent=False)
        self.register_buffer("scales_zeros", scales_zeros, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    @classmethod
    def from_blocks(cls, blocks: Blocks, bias: torch.Tensor | None, dense: torch.Tensor | None = None) -> "PackedLinear":
        codes, scale, zero = blocks.unpack()
        n, k = blocks.shape
        # The packed layout depends on the CPU capability torch runs with (AVX-512, AVX2, scalar).
        packed = torch._convert_weight_to_int4pack_for_cpu(codes, 1)
        scales_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        return cls(packed, scales_zeros, None if bias is None else bias.detach().clone(), k, n)

    @staticmethod
    def fits(blocks: Blocks) -> bool:
        n, k = blocks.shape  # the kernel packs output rows in blocks of 16, whole groups along the input
        return blocks.kind in Q4_KINDS and n % 16 == 0 and k % GROUP == 0

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"packed": self.packed, "scales_zeros": self.scales_zeros}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any], bias: torch.Tensor | None,
                     dense: torch.Tensor | None) -> "PackedLinear":
        return cls(tensors["packed"], tensors["scales_zeros"], bias, meta["in"], meta["out"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rows_through(x, self, torch.bfloat16,
                             lambda flat: torch._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scales_zeros))


class BlockLinear(nn.Module):
    """A linear layer (or a fused group) computed on its GGUF blocks by the fp32 kernel (gguf_linear.cpp).

    `dense`: the same weights as a dense tensor where the model holds them anyway (a tied LM head is
    the embedding): a prefill's many rows then take a plain GEMM instead of dequantizing the blocks.
    """

    kernel = "fp32"

    def __init__(self, blocks: torch.Tensor, kind: int, bias: torch.Tensor | None, in_features: int,
                 out_features: int, dense: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.kind = in_features, out_features, kind
        self.register_buffer("blocks", blocks, persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        self.dense = [dense]  # in a list: not a buffer of this module (it belongs to the embedding)

    @classmethod
    def from_blocks(cls, blocks: Blocks, bias: torch.Tensor | None, dense: torch.Tensor | None = None) -> "BlockLinear":
        n, k = blocks.shape
        raw = torch.from_numpy(np.array(blocks.raw, dtype=np.uint8))  # a copy: the file's map is read-only
        return cls(raw, blocks.kind, None if bias is None else bias.detach().clone(), k, n, dense)

    @staticmethod
    def fits(blocks: Blocks) -> bool:
        return blocks.kind in BLOCK_BYTES and blocks.shape[1] % BLOCK_WEIGHTS[blocks.kind] == 0

    @staticmethod
    def reproduces(blocks: Blocks, weight: torch.Tensor) -> bool:
        """Whether the kernel, on this CPU's code path, dequantizes `blocks` to `weight` bit for bit."""
        raw = torch.from_numpy(np.array(blocks.raw, dtype=np.uint8))
        return torch.equal(torch.ops.logitls.gguf_dequantize(raw, blocks.kind, blocks.shape[1]), weight)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"blocks": self.blocks}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any], bias: torch.Tensor | None,
                     dense: torch.Tensor | None) -> "BlockLinear":
        return cls(tensors["blocks"], meta["kind"], bias, meta["in"], meta["out"], dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dense = self.dense[0]
        rows = x.numel() // self.in_features
        if dense is not None and rows > DENSE_ROWS:
            return nn.functional.linear(x, dense, self.bias)
        bias = self.bias
        if bias is None or bias.dtype != torch.float32:
            return _rows_through(x, self, torch.float32,
                                 lambda flat: torch.ops.logitls.gguf_linear(flat, self.blocks, self.kind, self.in_features))
        # The bias inside the kernel: a prefill's tiles then add it as the dense layer does (addmm),
        # bit for bit, where a sum after the product rounds differently.
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.logitls.gguf_linear(flat if flat.dtype == torch.float32 else flat.float(), self.blocks,
                                            self.kind, self.in_features, bias)
        out = out.view(*x.shape[:-1], self.out_features)
        return out if out.dtype == x.dtype else out.to(x.dtype)


def _rows_through(x: torch.Tensor, layer: nn.Module, dtype: torch.dtype, kernel) -> torch.Tensor:
    """x's rows, in the kernel's input dtype, through `kernel`; back in x's shape and dtype, bias added."""
    flat = x.reshape(-1, layer.in_features)
    if flat.dtype != dtype:
        flat = flat.to(dtype)
    out = kernel(flat).view(*x.shape[:-1], layer.out_features)
    if out.dtype != x.dtype:
        out = out.to(x.dtype)
    if layer.bias is not None:
        out = out + layer.bias
    return out


LAYERS = {"fp32": BlockLinear, "bf16": PackedLinear}


class FusedSlice(nn.Module):
    """One projection of a fused group: the first of the group to see an input runs the kernel for all
    of them, the others take their columns of that output.

    The attention and MLP code of transformers calls q, k and v (gate and up) one after the other on
    the same tensor; the cached output is reused only for that very tensor object (held, so no other
    tensor can take its identity), and outside inference mode only while its version is unchanged.
    """

    def __init__(self, fused: "FusedGroup", start: int, end: int) -> None:
        super().__init__()
        self.fused = [fused]  # in a list: not a submodule of each slice
        self.start, self.end = start, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused[0].part(x, self.start, self.end)


class FusedGroup(nn.Module):
    def __init__(self, linear: PackedLinear, parts: int) -> None:
        super().__init__()
        self.linear = linear
        self.parts = parts
        self._input: torch.Tensor | None = None
        self._version: int | None = None
        self._output: torch.Tensor | None = None
        self._left = 0

    def part(self, x: torch.Tensor, start: int, end: int) -> torch.Tensor:
        version = None if x.is_inference() else x._version  # inference tensors keep no version counter
        if self._output is None or x is not self._input or version != self._version:
            self._output = self.linear(x)
            self._input, self._version, self._left = x, version, self.parts
        out = self._output[..., start:end]
        self._left -= 1
        if self._left <= 0:  # every projection has its part: hold nothing between forward passes
            self._input = self._output = None
        return out


def _concat(blocks: list[Blocks]) -> Blocks | None:
    if len({b.kind for b in blocks}) != 1 or len({b.shape[1] for b in blocks}) != 1:
        return None
    return Blocks(blocks[0].kind, np.concatenate([b.raw for b in blocks], axis=0))


def _shared_dense(model: nn.Module, linear: nn.Module) -> torch.Tensor | None:
    """The weight of a tied LM head: the embedding keeps it in memory whatever the head runs on."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if linear is head and embeddings is not None and embeddings.weight is linear.weight:
        return linear.weight.detach()
    return None


def _reproduces(layer_class: type, blocks: Blocks, weight: torch.Tensor) -> bool:
    """The blocks give the loaded weight: as the file's values (gguf-py's reading, for the int4
    kernel's unpacking) or, for the fp32 kernel, as that kernel computes them on this CPU."""
    check = getattr(layer_class, "reproduces", None)
    if check is not None:
        return check(blocks, weight)
    return torch.equal(blocks.dequantize(), weight)


def build_packed(model: nn.Module, layers: dict[str, Blocks], verify: bool = True, kernel: str = "fp32",
                 reference: Callable[[str, nn.Module], torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """The packed form of the model's linear layers named in `layers` (by module name), sibling
    projections fused where all of a group is packed: a list of entries {modules, widths, layer}.

    With `verify`, a layer is packed only where its codes reproduce the exact float32 weight:
    `reference(name, linear)` gives it (default: the loaded weight, in float32).
    """
    layer_class = LAYERS[kernel]
    modules = dict(model.named_modules())
    reference = reference or (lambda _name, linear: linear.weight.detach().float())
    usable: dict[str, Blocks] = {}
    mismatched = []
    for name, blocks in layers.items():
        linear = modules.get(name)
        if not isinstance(linear, nn.Linear) or blocks.shape != tuple(linear.weight.shape) or not layer_class.fits(blocks):
            continue
        if verify and not _reproduces(layer_class, blocks, reference(name, linear)):
            mismatched.append(name)
            continue
        usable[name] = blocks
    if mismatched:
        logger.warning("packed weights: %d layer(s) do not match the GGUF's codes and stay exact (%s, …)",
                       len(mismatched), mismatched[0])
    plan: list[dict[str, Any]] = []
    grouped: set[str] = set()
    for parent_name, parent in modules.items():
        prefix = f"{parent_name}." if parent_name else ""
        for group in FUSED_GROUPS:
            names = [prefix + child for child in group]
            if not all(n in usable for n in names):
                continue
            blocks = _concat([usable[n] for n in names])
            biases = [getattr(parent, child).bias for child in group]
            if blocks is None or len({b is None for b in biases}) != 1:
                continue
            bias = None if biases[0] is None else torch.cat([b.detach() for b in biases])
            plan.append({"modules": names, "widths": [usable[n].shape[0] for n in names],
                         "layer": layer_class.from_blocks(blocks, bias)})
            grouped.update(names)
    for name, blocks in usable.items():
        if name not in grouped:
            linear = modules[name]
            plan.append({"modules": [name], "widths": [blocks.shape[0]],
                         "layer": layer_class.from_blocks(blocks, linear.bias, _shared_dense(model, linear))})
    return plan


def apply_packed(model: nn.Module, plan: list[dict[str, Any]]) -> int:
    """Put the plan's packed layers in place of the model's linear ones; returns how many were replaced."""
    replaced = 0
    for entry in plan:
        layer: PackedLinear = entry["layer"]
        if len(entry["modules"]) == 1:
            _replace(model, entry["modules"][0], layer)
            replaced += 1
            continue
        fused = FusedGroup(layer, len(entry["modules"]))
        start = 0
        for name, width in zip(entry["modules"], entry["widths"]):
            _replace(model, name, FusedSlice(fused, start, start + width))
            start += width
            replaced += 1
        parent_name = entry["modules"][0].rpartition(".")[0]
        parent = model.get_submodule(parent_name) if parent_name else model
        parent.add_module("fused_" + entry["modules"][0].rpartition(".")[2].split("_")[0], fused)
    return replaced


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def save_plan(plan: list[dict[str, Any]], path: Path, plan_key: dict[str, Any]) -> None:
    """Write the packed layers to one safetensors file (written whole, then renamed into place)."""
    import json
    import os
    import tempfile

    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    layout = []
    for i, entry in enumerate(plan):
        layer = entry["layer"]
        for key, tensor in layer.tensors().items():
            tensors[f"{i}.{key}"] = tensor
        if layer.bias is not None:
            tensors[f"{i}.bias"] = layer.bias
        layout.append({"modules": entry["modules"], "widths": entry["widths"], "in": layer.in_features,
                       "out": layer.out_features, "kernel": layer.kernel, "kind": getattr(layer, "kind", None)})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".packed-", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, staging, metadata={"layout": json.dumps(layout), "key": json.dumps(plan_key)})
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


def load_plan(path: Path, model: nn.Module) -> list[dict[str, Any]]:
    import json

    from safetensors import safe_open

    modules = dict(model.named_modules())
    plan = []
    with safe_open(str(path), framework="pt") as f:
        layout = json.loads(f.metadata()["layout"])
        names = set(f.keys())
        for i, entry in enumerate(layout):
            bias = f.get_tensor(f"{i}.bias") if f"{i}.bias" in names else None
            tensors = {key.partition(".")[2]: f.get_tensor(key) for key in names
                       if key.partition(".")[0] == str(i) and not key.endswith(".bias")}
            linear = modules.get(entry["modules"][0]) if len(entry["modules"]) == 1 else None
            dense = _shared_dense(model, linear) if linear is not None else None
            layer = LAYERS[entry.get("kernel", "bf16")].from_tensors(tensors, entry, bias, dense)
            plan.append({"modules": entry["modules"], "widths": entry["widths"], "layer": layer})
    return plan


PLAN_VERSION = 2  # the packed file's format; a file of another version, kernel or CPU layout is built again


def plan_file(folder: Path, kernel: str = "fp32") -> Path:
    """Where a converted model keeps its packed layers: the GGUF's blocks for the fp32 kernel, and per
    CPU capability for torch's int4 kernel, whose layout depends on it."""
    if kernel == "fp32":
        return folder / "packed-gguf-blocks.safetensors"
    return folder / f"packed-q4-{_cpu_capability()}.safetensors"


def _cpu_capability() -> str:
    return torch.backends.cpu.get_cpu_capability().lower()


def _plan_key(kernel: str) -> dict[str, Any]:
    """Everything that decides a packed file's content, stored in it and checked before it is used. The
    blocks are checked against the float32 weights of the file, whatever dtype the model runs in."""
    return {"version": PLAN_VERSION, "kernel": kernel, "layout": _cpu_capability() if kernel == "bf16" else "gguf"}


def _read_layout(path: Path, kernel: str) -> list[dict[str, Any]] | None:
    """The layout of a packed file made for this key, or None (missing, damaged, another key, empty)."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        key = json.loads(metadata.get("key", "null"))
        layout = json.loads(metadata["layout"])
    except Exception:  # noqa: BLE001 - missing or damaged: built again
        return None
    return layout if key == _plan_key(kernel) and layout else None


def planned_modules(folder: Path, kernel: str) -> set[str]:
    """The modules a usable packed file of `folder` replaces: the loader need not read their dense weights."""
    layout = _read_layout(plan_file(folder, kernel), kernel)
    return {name for entry in layout for name in entry["modules"]} if layout else set()


def pack_from_gguf(model: nn.Module, gguf: Path, folder: Path, kernel: str = "fp32") -> tuple[int, str]:
    """Pack the model's quantized layers from the GGUF it was converted from, building the packed file
    once. Returns how many layers were packed, and why none were where that is 0. A file that is not
    usable (another key, damaged, empty) is built again; an empty plan is never written."""
    path = plan_file(folder, kernel)
    if _read_layout(path, kernel) is not None:
        try:
            return apply_packed(model, load_plan(path, model)), ""
        except Exception:  # noqa: BLE001 - a damaged file: build it again
            logger.warning("packed weights: cannot read %s; building it again", path, exc_info=True)
    layers = gguf_block_layers(gguf, model)
    if not layers:
        return 0, f"{gguf.name} has no layers of a kind the kernels read"
    plan = build_packed(model, layers, kernel=kernel, reference=_file_weights(folder))
    if not plan:
        return 0, f"no layer of {gguf.name} reproduces the model's float32 weights"
    try:
        save_plan(plan, path, _plan_key(kernel))
    except OSError:
        logger.warning("packed weights: cannot write %s; they are built again next time", path)
    return apply_packed(model, plan), ""


def _file_weights(folder: Path) -> Callable[[str, nn.Module], torch.Tensor]:
    """A layer's float32 weight as the converted folder stores it (a tied LM head's is the embedding's),
    else the loaded one: packing checks against these, not against weights already cast to bf16."""
    from safetensors import safe_open

    def reference(name: str, linear: nn.Module) -> torch.Tensor:
        try:
            with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
                keys = set(f.keys())
                for key in (f"{name}.weight", "model.embed_tokens.weight" if name == "lm_head" else None):
                    if key in keys:
                        return f.get_tensor(key).float()
        except Exception:  # noqa: BLE001 - no such file: the loaded weight
            pass
        return linear.weight.detach().float()

    return reference


def gguf_block_layers(gguf: Path, model: nn.Module) -> dict[str, Blocks]:
    """The GGUF's block-quantised tensors (kinds in BLOCK_BYTES) by the model's module names, rows in
    the model's order.

    Names are mapped with gguf-py's tensor name map and rows permuted (llama.cpp permutes Llama's q/k
    rows for its RoPE) by transformers' own tensor processor, as transformers' GGUF loader does.
    """
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

    architecture, tensors = read_tensors(gguf)
    config = model.config
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config={
        "num_attention_heads": getattr(config, "num_attention_heads", None),
        "num_key_value_heads": getattr(config, "num_key_value_heads", None)})
    arch = next((key for key, value in MODEL_ARCH_NAMES.items() if value == architecture), None)
    if arch is None:
        return {}
    # transformers' get_gguf_hf_weights_map does this for every submodule (seconds); its naming is the
    # same: a module's GGUF name from its full name, or from the name below the top module.
    names = get_tensor_name_map(arch, config.num_hidden_layers)
    mapping: dict[str, str] = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        gguf_name = names.get_name(module_name) or names.get_name(module_name.partition(".")[2])
        if gguf_name is not None:
            mapping.setdefault(gguf_name + ".weight", module_name + ".weight")
    # A tied LM head has no tensor of its own in the file: it is the token embedding's.
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_name = next((name for name, module in model.named_modules() if module is head), None)
    if head_name and _shared_dense(model, head) is not None and \
            not any(t.name == "output.weight" for t in tensors):
        mapping["token_embd.weight"] = head_name + ".weight"
    layers: dict[str, Blocks] = {}
    for tensor in tensors:
        if int(tensor.tensor_type) not in BLOCK_BYTES or tensor.data.ndim != 2:
            continue
        raw = tensor.data
        order = np.arange(raw.shape[0], dtype=np.float64).reshape(-1, 1)
        result = processor.process(weights=order, name=tensor.name, tensor_key_mapping=mapping,
                                   parsed_parameters={"tensors": {}, "config": {}})
        if result.name not in mapping or result.weights is None or np.shape(result.weights) != order.shape:
            continue
        hf_name = mapping[result.name]
        if not hf_name.endswith(".weight"):
            continue
        rows = np.asarray(result.weights).reshape(-1).astype(np.int64)
        layers[hf_name[: -len(".weight")]] = Blocks(int(tensor.tensor_type), raw).rows(rows)
    return layers

