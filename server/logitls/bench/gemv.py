"""One decode step's matrix-vector products on a model's shapes: the fp32 GGUF-block kernel on each
block kind against torch's dense fp32 `linear`, best-of-N median times, and the bytes a weight read.

    python -m logitls.bench.gemv                 # the default model's and Qwen2.5-1.5B's shapes
    python -m logitls.bench.gemv --threads 1

Random weights (the time does not depend on the values); K-quants only where a row is whole blocks
of 256 weights (llama.cpp falls back to Q5_0/Q5_1/Q8_0 elsewhere, as for the default model's 576).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from ..engine import kernels
from ..engine.packed import BLOCK_BYTES, BLOCK_WEIGHTS, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0
from .quantize import quantize

KINDS = {"Q4_0": Q4_0, "Q4_1": Q4_1, "Q5_0": Q5_0, "Q5_1": Q5_1, "Q8_0": Q8_0, "Q4_K": Q4_K, "Q5_K": Q5_K,
         "Q6_K": Q6_K}
# name: (hidden, intermediate, kv width, vocabulary)
MODELS = {"smollm2-135m": (576, 1536, 192, 49152), "qwen2.5-1.5b": (1536, 8960, 256, 151936)}


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def layers(hidden: int, intermediate: int, kv: int, vocab: int) -> dict[str, tuple[int, int]]:
    """(out, in) of one layer's products (q, k/v, o, gate+up fused, down) and the LM head."""
    return {"q / o": (hidden, hidden), "k, v": (kv, hidden), "gate+up": (2 * intermediate, hidden),
            "down": (hidden, intermediate), "lm head": (vocab, hidden)}


def run(model: str, repeats: int, out=sys.stdout) -> None:
    hidden, intermediate, kv, vocab = MODELS[model]
    print(f"\n{model}: one row (a decode step), median of {repeats}, {torch.get_num_threads()} threads, "
          f"kernel path {kernels.cpu_path()}; ms (GB/s of weights read)", file=out)
    shapes = layers(hidden, intermediate, kv, vocab)
    print(f"{'':8}" + "".join(f"{name + f' {n}x{k}':>26}" for name, (n, k) in shapes.items()), file=out)
    rng = np.random.default_rng(0)
    weights = {name: (rng.standard_normal((n, k), dtype=np.float32) * 0.02) for name, (n, k) in shapes.items()}
    x = {name: torch.randn(1, k) for name, (n, k) in shapes.items()}

    def cell(seconds: float, n_bytes: int) -> str:
        return f"{seconds * 1e3:8.3f} ({n_bytes / seconds / 1e9:5.1f})"

    row = f"{'fp32':8}"
    for name, w in weights.items():
        dense = torch.from_numpy(w)
        row += f"{cell(_time(lambda: torch.nn.functional.linear(x[name], dense), repeats), dense.numel() * 4):>26}"
    print(row, file=out)
    for label, kind in KINDS.items():
        row = f"{label:8}"
        for name, w in weights.items():
            n, k = w.shape
            if k % BLOCK_WEIGHTS[kind]:
                row += f"{'-':>26}"
                continue
            blocks = torch.from_numpy(quantize(w, kind))
            n_bytes = n * k // BLOCK_WEIGHTS[kind] * BLOCK_BYTES[kind]
            seconds = _time(lambda: torch.ops.logitls.gguf_linear(x[name], blocks, kind, k), repeats)
            row += f"{cell(seconds, n_bytes):>26}"
        print(row, file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m logitls.bench.gemv", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not kernels.available():
        print(f"the fp32 GGUF kernel is unavailable: {kernels.unavailable_reason()}", file=sys.stderr)
        return 1
    with torch.inference_mode():
        for model in args.models:
            run(model, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
