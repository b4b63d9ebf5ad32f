"""Weights quantised to GGUF blocks, for random-weight models: gguf-py's reference quantisers where it
has them (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), and for the K-quants (Q4_K, Q5_K, Q6_K), which gguf-py can
read but not write, a plain one of our own.

The K-quant quantiser is not llama.cpp's (that searches each sub-block's scale and min to minimise the
error); it picks them from the sub-block's range. Its blocks are laid out as llama.cpp's, which is
what matters here: gguf-py's `dequantize` reads them back (tests/test_gguf_kernel.py checks that), so
a model built from them has the exact weights a real K-quant file would give its loader.
"""

from __future__ import annotations

import numpy as np

Q4_K, Q5_K, Q6_K = 12, 13, 14  # ggml type ids (gguf.GGMLQuantizationType)
SUPER = 256  # weights in a K-quant block


def quantize(weights: np.ndarray, kind: int) -> np.ndarray:
    """`weights` (float32 [N, K]) as blocks of ggml type `kind`: uint8 [N, K / block weights * block bytes]."""
    weights = np.asarray(weights, dtype=np.float32)
    if kind not in (Q4_K, Q5_K, Q6_K):
        from gguf import GGMLQuantizationType
        from gguf.quants import quantize as gguf_quantize

        return gguf_quantize(weights, GGMLQuantizationType(kind))
    rows, k = weights.shape
    if k % SUPER:
        raise ValueError(f"K-quants need rows of a multiple of {SUPER} weights, not {k}")
    blocks = weights.reshape(-1, SUPER)
    raw = _q6_k(blocks) if kind == Q6_K else _q45_k(blocks, five=kind == Q5_K)
    return raw.reshape(rows, -1)


def _fp16(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float16)


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b == 0, 0, a / np.where(b == 0, 1, b))


def _q45_k(blocks: np.ndarray, five: bool) -> np.ndarray:
    """Q4_K / Q5_K: per 32 weights w = (d·sc)·q − dmin·m, sc and m 6-bit, q 4- or 5-bit."""
    n = blocks.shape[0]
    levels = 31 if five else 15
    sub = blocks.reshape(n, 8, 32)
    low = np.minimum(sub.min(-1), 0)
    scale = (sub.max(-1) - low) / levels
    d, dmin = _fp16(scale.max(-1) / 63), _fp16((-low).max(-1) / 63)
    sc = np.clip(np.rint(_divide(scale, d.astype(np.float32)[:, None])), 0, 63).astype(np.uint8)
    mn = np.clip(np.rint(_divide(-low, dmin.astype(np.float32)[:, None])), 0, 63).astype(np.uint8)
    step = d.astype(np.float32)[:, None] * sc
    offset = dmin.astype(np.float32)[:, None] * mn
    q = np.clip(np.rint(_divide(sub + offset[..., None], step[..., None])), 0, levels).astype(np.uint8)
    # 12 bytes: 6 bits of sc[j] / mn[j] for j < 4 with the top 2 bits of sc[j + 4] / mn[j + 4] above
    # them, then the low 4 bits of sc[j + 4] and mn[j + 4] (ggml's get_scale_min_k4 reads it back)
    scales = np.empty((n, 12), dtype=np.uint8)
    scales[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    scales[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    # 128 bytes: bytes 32 c .. 32 c + 31 hold sub-block 2 c in their low nibbles, 2 c + 1 in their high
    nibbles = q & 0x0F
    codes = (nibbles[:, 0::2, :] | (nibbles[:, 1::2, :] << 4)).reshape(n, 128)
    parts = [d.view(np.uint8).reshape(n, 2), dmin.view(np.uint8).reshape(n, 2), scales]
    if five:  # 32 bytes: bit g of byte l is the fifth bit of weight l of sub-block g
        fifth = ((q >> 4) & 1).astype(np.uint8)
        parts.append((fifth << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8))
    parts.append(codes)
    return np.concatenate(parts, axis=-1)


def _q6_k(blocks: np.ndarray) -> np.ndarray:
    """Q6_K: per 16 weights w = (d·sc)·(q − 32), sc int8, q 6-bit; scales signed, as llama.cpp's are."""
    n = blocks.shape[0]
    sub = blocks.reshape(n, 16, 16)
    extreme = np.take_along_axis(sub, np.abs(sub).argmax(-1)[..., None], axis=-1)[..., 0]
    scale = extreme / -32  # the largest weight maps to code -32
    biggest = np.take_along_axis(scale, np.abs(scale).argmax(-1)[:, None], axis=-1)[:, 0]
    d = _fp16(biggest / -128)
    sc = np.clip(np.rint(_divide(scale, d.astype(np.float32)[:, None])), -128, 127).astype(np.int8)
    step = d.astype(np.float32)[:, None] * sc.astype(np.float32)
    q = (np.clip(np.rint(_divide(sub, step[..., None])), -32, 31) + 32).astype(np.uint8).reshape(n, 2, 4, 32)
    # weight 128 h + 32 t + l: low nibble of byte 64 h + 32 (t & 1) + l (t < 2) or its high nibble
    # (t >= 2); its top 2 bits at bit 2 t of byte 128 + 32 h + l
    nibbles = q & 0x0F
    low = (nibbles[:, :, 0:2, :] | (nibbles[:, :, 2:4, :] << 4)).reshape(n, 128)
    top = (q >> 4) & 3
    high = (top[:, :, 0] | (top[:, :, 1] << 2) | (top[:, :, 2] << 4) | (top[:, :, 3] << 6)).reshape(n, 64)
    return np.concatenate([low, high, sc.view(np.uint8), d.view(np.uint8).reshape(n, 2)], axis=-1)
