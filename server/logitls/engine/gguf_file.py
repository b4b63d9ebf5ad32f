"""A GGUF file's tensors, mapped, without building its metadata: gguf-py's GGUFReader makes an object
per metadata value, which for a vocabulary of 50 000 to 150 000 strings takes seconds."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# bytes a block and weights a block of the block kinds the fp32 kernel reads (see kernels/gguf_linear.cpp)
BLOCK_BYTES = {2: 18, 3: 20, 6: 22, 7: 24, 8: 34, 12: 144, 13: 176, 14: 210}
BLOCK_WEIGHTS = {kind: 256 if kind >= 12 else 32 for kind in BLOCK_BYTES}

# GGUF value types' sizes (strings and arrays are read apart)
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


@dataclass
class FileTensor:
    name: str
    tensor_type: int  # ggml type id
    data: np.ndarray  # a read-only map of the file: [rows, bytes a row] for blocks, the values for F32/F16


def read_tensors(gguf: Path) -> tuple[str, list[FileTensor]]:
    """The file's architecture and its tensors, mapped. gguf-py's GGUFReader builds an object per
    metadata value (a vocabulary's 150 000 strings: seconds); this reads only what a load needs."""
    mapped = np.memmap(gguf, dtype=np.uint8, mode="r")
    buffer = memoryview(mapped)
    position = 0

    def take(fmt: str):
        nonlocal position
        values = struct.unpack_from("<" + fmt, buffer, position)
        position += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string() -> str:
        nonlocal position
        length = take("Q")
        position += length
        return bytes(buffer[position - length:position]).decode("utf-8", errors="replace")

    def skip(value_type: int) -> None:
        nonlocal position
        if value_type == _STRING:
            length = take("Q")  # read before the += below takes `position`
            position += length
        elif value_type == _ARRAY:
            item_type, count = take("IQ")
            if item_type in _SCALAR:
                position += count * _SCALAR[item_type]
            else:
                for _ in range(count):
                    skip(item_type)
        else:
            position += _SCALAR[value_type]

    magic, version, n_tensors, n_values = take("4sIQQ")
    if magic != b"GGUF" or version < 2:
        raise ValueError(f"{gguf} is not a GGUF file of version 2 or later")
    architecture, alignment = "", 32
    for _ in range(n_values):
        key, value_type = string(), take("I")
        if key == "general.architecture" and value_type == _STRING:
            architecture = string()
        elif key == "general.alignment" and value_type == 4:
            alignment = take("I")
        else:
            skip(value_type)
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = take("I")
        shape = [take("Q") for _ in range(dims)]
        infos.append((name, shape, take("I"), take("Q")))
    start = -(-position // alignment) * alignment
    tensors = []
    for name, shape, tensor_type, offset in infos:
        rows = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        at = start + offset
        if tensor_type in (0, 1):  # F32, F16: numpy's shape is the dims reversed
            dtype = np.float32 if tensor_type == 0 else np.float16
            count = int(np.prod(shape, dtype=np.int64))
            data = mapped[at:at + count * dtype().itemsize].view(dtype).reshape(tuple(reversed(shape)))
        elif tensor_type in BLOCK_BYTES and shape[0] % BLOCK_WEIGHTS[tensor_type] == 0:
            row_bytes = shape[0] // BLOCK_WEIGHTS[tensor_type] * BLOCK_BYTES[tensor_type]
            data = mapped[at:at + rows * row_bytes].reshape(rows, row_bytes)
        else:
            data = np.empty(0, dtype=np.uint8)  # a kind the kernel does not read: refused by the caller
        tensors.append(FileTensor(name, tensor_type, data))
    return architecture, tensors
