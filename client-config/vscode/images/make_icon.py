"""Draws images/icon.png (128x128): a next-token probability histogram in the lens's GLTR colours on a
dark tile. Pure Python (zlib + struct), so it needs nothing installed: `python3 images/make_icon.py`."""

import struct
import zlib
from pathlib import Path

SIZE = 128
BACKGROUND, BASELINE = (30, 34, 42), (200, 205, 215)
# bars: (left, right, height, colour) - likely, plausible, unlikely, surprising
BARS = [(18, 40, 86, (76, 175, 80)), (46, 68, 52, (230, 190, 60)), (74, 96, 26, (220, 80, 70)),
        (102, 112, 10, (150, 90, 200))]


def pixel(x: int, y: int) -> tuple[int, int, int, int]:
    corner = 18  # rounded tile: transparent outside the corners' circles
    cx, cy = min(max(x, corner), SIZE - 1 - corner), min(max(y, corner), SIZE - 1 - corner)
    if (x - cx) ** 2 + (y - cy) ** 2 > corner ** 2:
        return (0, 0, 0, 0)
    if 104 <= y <= 106 and 14 <= x <= 114:
        return (*BASELINE, 255)
    for left, right, height, colour in BARS:
        if left <= x <= right and 104 - height <= y < 104:
            return (*colour, 255)
    return (*BACKGROUND, 255)


def png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + row for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


rows = [bytes(v for x in range(SIZE) for v in pixel(x, y)) for y in range(SIZE)]
Path(__file__).with_name("icon.png").write_bytes(png(SIZE, SIZE, rows))
