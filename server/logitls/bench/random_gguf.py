"""A random-weight GGUF of a bigger model's shape, for `logitls bench --model FILE.gguf` where no such
model can be downloaded: its speed and memory are those of the real model (they do not depend on the
values), its fidelity figures are not (random weights give near-flat distributions).

    python -m logitls.bench.random_gguf smollm2-360m /tmp/smollm2-360m-random.Q4_1.gguf
    python -m logitls.bench.random_gguf qwen2.5-1.5b /tmp/qwen2.5-1.5b-random.Q4_K_M.gguf --type q4_k_m

`--type` picks the blocks as llama.cpp's `llama-quantize` would for that file type (its main rules, in
`types_for`): q4_1 (the default model's: Q4_1 layers, a Q8_0 embedding), q4_0, q5_0, q5_1, q8_0, and the
K-quant mixes q4_k_m / q5_k_m (attention's v and the MLP's down projection in Q6_K on a third of the
layers and the first and last eighth, the tied embedding in Q6_K) and q6_k. A tensor whose rows are no
multiple of 256 weights takes llama.cpp's fallback (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0).

The default model's file lends its tokenizer (and every other key but the shape and architecture);
`--vocab` pads its vocabulary with unused tokens up to a real model's (Qwen2.5's is 151936), so that the
embedding and LM head have the real size. Llama's q/k rows are permuted as llama.cpp's converter does;
Qwen2 has biases on q/k/v.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .quantize import quantize

# (architecture, layers, hidden, intermediate, heads, kv heads, real vocabulary)
SHAPES = {
    "smollm2-360m": ("llama", 32, 960, 2560, 15, 5, 49152),
    "smollm2-1.7b": ("llama", 24, 2048, 8192, 32, 32, 49152),
    "qwen2.5-0.5b": ("qwen2", 24, 896, 4864, 14, 2, 151936),
    "qwen2.5-1.5b": ("qwen2", 28, 1536, 8960, 12, 2, 151936),
    # for the tests: K-quant rows (256 wide) and, in ffn_down (384), the fallback types
    "tiny-llama": ("llama", 2, 256, 384, 4, 2, 49152),
    "tiny-qwen2": ("qwen2", 2, 256, 384, 4, 2, 49152),
}
SHAPE_KEYS = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count",
              "attention.head_count_kv", "rope.dimension_count")
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K = 2, 3, 6, 7, 8, 12, 13, 14  # ggml type ids
# --type: (llama.cpp's general.file_type, the layers' base type)
TYPES = {"q4_0": (2, Q4_0), "q4_1": (3, Q4_1), "q8_0": (7, Q8_0), "q5_0": (8, Q5_0), "q5_1": (9, Q5_1),
         "q4_k_m": (15, Q4_K), "q5_k_m": (17, Q5_K), "q6_k": (18, Q6_K)}
FALLBACK = {Q4_K: Q5_0, Q5_K: Q5_1, Q6_K: Q8_0}  # llama.cpp's, for rows of no multiple of 256
UNUSED_TOKEN = 5  # llama.cpp's token type for a vocabulary slot no text produces


def types_for(file_type: str, layers: int) -> tuple[int, dict[str, list[int]]]:
    """The tied embedding's type and, per linear tensor name, each layer's type, as llama-quantize picks
    them for `file_type` (before the fallback for rows of no multiple of 256)."""
    base = TYPES[file_type][1]
    more_bits = [i < layers // 8 or i >= 7 * layers // 8 or (i - layers // 8) % 3 == 2 for i in range(layers)]
    per_layer = {name: [base] * layers for name in
                 ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")}
    if file_type in ("q4_k_m", "q5_k_m"):
        for name in ("attn_v", "ffn_down"):
            per_layer[name] = [Q6_K if more else base for more in more_bits]
    embedding = Q6_K if base in (Q4_K, Q5_K, Q6_K) else Q8_0
    return embedding, per_layer


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (transformers undoes it on load)."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2) \
        .reshape(weights.shape)


def write(shape: str, out: Path, seed: int = 0, file_type: str = "q4_1", vocab: int | None = None) -> Path:
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    from ..engine.loading import default_gguf

    architecture, layers, hidden, intermediate, heads, kv_heads, _ = SHAPES[shape]
    source = GGUFReader(str(default_gguf()))
    tokens = [str(t) for t in source.fields["tokenizer.ggml.tokens"].contents()]
    vocab = max(vocab or len(tokens), len(tokens))
    padding = vocab - len(tokens)
    writer = GGUFWriter(str(out), arch=architecture)
    shape_values = dict(zip(SHAPE_KEYS, (layers, hidden, intermediate, heads, kv_heads, hidden // heads)))
    shape_values["vocab_size"] = vocab
    for key, field in source.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = field.contents()
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        if key.startswith("llama."):
            name = key.removeprefix("llama.")
            if name in shape_values:
                writer.add_uint32(f"{architecture}.{name}", shape_values.pop(name))
                continue
            key = f"{architecture}.{name}"
        elif key == "general.name":
            value = f"{shape} (random weights)"
        elif key == "general.file_type":
            value = TYPES[file_type][0]
        elif key == "tokenizer.ggml.tokens" and padding:
            value = tokens + [f"<|unused_{i}|>" for i in range(padding)]
        elif key == "tokenizer.ggml.token_type" and padding:
            value = list(value) + [UNUSED_TOKEN] * padding
        elif key == "tokenizer.ggml.scores" and padding:
            value = list(value) + [0.0] * padding
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
    for name, value in shape_values.items():
        writer.add_uint32(f"{architecture}.{name}", value)
    rng = np.random.default_rng(seed)

    def normal(*dims: int) -> np.ndarray:
        return (rng.standard_normal(dims, dtype=np.float32) * 0.02).astype(np.float32)

    def blocks(name: str, weights: np.ndarray, kind: int) -> None:
        if weights.shape[-1] % 256 and kind in FALLBACK:
            kind = FALLBACK[kind]
        writer.add_tensor(name, quantize(weights, kind), raw_dtype=kind)

    embedding, per_layer = types_for(file_type, layers)
    blocks("token_embd.weight", normal(vocab, hidden), embedding)
    head_dim = hidden // heads
    permute = architecture == "llama"  # llama.cpp permutes Llama's q/k rows for its RoPE, not Qwen2's
    for i in range(layers):
        def kind(name: str) -> int:
            return per_layer[name][i]

        q, k = normal(hidden, hidden), normal(kv_heads * head_dim, hidden)
        blocks(f"blk.{i}.attn_q.weight", _permute(q, heads) if permute else q, kind("attn_q"))
        blocks(f"blk.{i}.attn_k.weight", _permute(k, kv_heads) if permute else k, kind("attn_k"))
        blocks(f"blk.{i}.attn_v.weight", normal(kv_heads * head_dim, hidden), kind("attn_v"))
        blocks(f"blk.{i}.attn_output.weight", normal(hidden, hidden), kind("attn_output"))
        blocks(f"blk.{i}.ffn_gate.weight", normal(intermediate, hidden), kind("ffn_gate"))
        blocks(f"blk.{i}.ffn_up.weight", normal(intermediate, hidden), kind("ffn_up"))
        blocks(f"blk.{i}.ffn_down.weight", normal(hidden, intermediate), kind("ffn_down"))
        if architecture == "qwen2":
            for name, width in (("attn_q", hidden), ("attn_k", kv_heads * head_dim), ("attn_v", kv_heads * head_dim)):
                writer.add_tensor(f"blk.{i}.{name}.bias", normal(width))
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
    parser.add_argument("--type", choices=sorted(TYPES), default="q4_1", help="llama.cpp file type (default q4_1)")
    parser.add_argument("--vocab", type=int, default=None,
                        help="pad the vocabulary to this size (default: the shape's real model's)")
    args = parser.parse_args(argv)
    vocab = args.vocab if args.vocab is not None else SHAPES[args.shape][-1]
    print(write(args.shape, args.out, args.seed, args.type, vocab), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
