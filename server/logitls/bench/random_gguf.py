"""A random-weight GGUF of a bigger model's shape, for `logitls bench --model FILE.gguf` where no such
model can be downloaded: its speed and memory are those of the real model (they do not depend on the
values), its fidelity figures are not (random weights give near-flat distributions).

    python -m logitls.bench.random_gguf smollm2-360m /tmp/smollm2-360m-random.Q4_1.gguf

The linear layers are Q4_1 and the embedding Q8_0, as in the default model's file, whose tokenizer
(and every other key but the shape) it copies; q/k rows are permuted as llama.cpp's converter does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# Llama-architecture shapes: (layers, hidden, intermediate, heads, kv heads)
SHAPES = {
    "smollm2-360m": (32, 960, 2560, 15, 5),
    "smollm2-1.7b": (24, 2048, 8192, 32, 32),
}
SHAPE_KEYS = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
              "attention.head_count_kv", "rope.dimension_count")


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (transformers undoes it on load)."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2) \
        .reshape(weights.shape)


def write(shape: str, out: Path, seed: int = 0) -> Path:
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import quantize

    from ..engine.loading import default_gguf

    layers, hidden, intermediate, heads, kv_heads = SHAPES[shape]
    source = GGUFReader(str(default_gguf()))
    writer = GGUFWriter(str(out), arch="llama")
    shape_values = dict(zip(SHAPE_KEYS, (layers, hidden, intermediate, heads, kv_heads, hidden // heads)))
    for key, field in source.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        name = key.removeprefix("llama.")
        if name in shape_values:
            writer.add_uint32(key, shape_values.pop(name))
            continue
        value = field.contents()
        vtype = field.types[0]
        if key == "general.name":
            value = f"{shape} (random weights)"
        sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    for name, value in shape_values.items():
        writer.add_uint32(f"llama.{name}", value)
    vocab = len(source.fields["tokenizer.ggml.tokens"].data)
    rng = np.random.default_rng(seed)

    def normal(*dims: int) -> np.ndarray:
        return (rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(np.float32)

    def q4(name: str, weights: np.ndarray) -> None:
        writer.add_tensor(name, quantize(weights, GGMLQuantizationType.Q4_1), raw_dtype=GGMLQuantizationType.Q4_1)

    writer.add_tensor("token_embd.weight", quantize(normal(vocab, hidden), GGMLQuantizationType.Q8_0),
                      raw_dtype=GGMLQuantizationType.Q8_0)
    head_dim = hidden // heads
    for i in range(layers):
        q4(f"blk.{i}.attn_q.weight", _permute(normal(hidden, hidden), heads))
        q4(f"blk.{i}.attn_k.weight", _permute(normal(kv_heads * head_dim, hidden), kv_heads))
        q4(f"blk.{i}.attn_v.weight", normal(kv_heads * head_dim, hidden))
        q4(f"blk.{i}.attn_output.weight", normal(hidden, hidden))
        q4(f"blk.{i}.ffn_gate.weight", normal(intermediate, hidden))
        q4(f"blk.{i}.ffn_up.weight", normal(intermediate, hidden))
        q4(f"blk.{i}.ffn_down.weight", normal(hidden, intermediate))
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.add_tensor("output_norm.weight", np.ones(hidden, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m logitls.bench.random_gguf", description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write(args.shape, args.out, args.seed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
