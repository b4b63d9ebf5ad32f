"""The fp32 GGUF-block kernel (engine/kernels/gguf_linear.cpp) against gguf-py's own dequantizer: the
same fp32 weights, bit for bit, and a layer's output equal to the dense layer's up to the order of the
additions (exactly equal where many rows take the dense GEMM)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from logitls.engine import kernels
from logitls.engine.packed import (BLOCK_BYTES, BLOCK_WEIGHTS, DENSE_ROWS, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K,
                                    Q6_K, Q8_0)

KINDS = {"q4_0": Q4_0, "q4_1": Q4_1, "q5_0": Q5_0, "q5_1": Q5_1, "q8_0": Q8_0, "q4_k": Q4_K, "q5_k": Q5_K,
         "q6_k": Q6_K}


@pytest.fixture(scope="module", autouse=True)
def _built():
    assert kernels.available(), kernels.unavailable_reason()  # make setup builds it; a compiler builds it here


def _blocks(kind: int, n: int, k: int, seed: int):
    """A quantised random weight's blocks and gguf-py's dequantization of them."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from logitls.bench.quantize import quantize

    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    raw = quantize(weight, kind)
    return torch.from_numpy(raw.copy()), torch.from_numpy(dequantize(raw, GGMLQuantizationType(kind)).copy())


def _any_blocks(kind: int, n: int, k: int, seed: int):
    """Blocks of random bytes (every code, bit and scale pattern a file may hold; the fp16 scales kept
    finite, and those of Q4_K/Q5_K small enough that no weight overflows) and gguf-py's values of them."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    rng = np.random.default_rng(seed)
    bytes_, count = BLOCK_BYTES[kind], n * k // BLOCK_WEIGHTS[kind]
    raw = rng.integers(0, 256, size=(count, bytes_), dtype=np.uint8)
    halves = {Q6_K: [208], Q4_K: [0, 2], Q5_K: [0, 2], Q4_1: [0, 2], Q5_1: [0, 2]}.get(kind, [0])
    for at in halves:
        scale = (rng.standard_normal(count) * 0.01).astype(np.float16)
        raw[:, at:at + 2] = scale.view(np.uint8).reshape(count, 2)
    raw = raw.reshape(n, -1)
    return torch.from_numpy(raw.copy()), torch.from_numpy(dequantize(raw, GGMLQuantizationType(kind)).copy())


def _shapes(kind: int) -> list[tuple[int, int]]:
    if BLOCK_WEIGHTS[kind] == 256:  # 37: rows in no multiple of 16
        return [(64, 256), (37, 768), (576, 1536)]
    return [(64, 32), (37, 96), (576, 1536)]


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
@pytest.mark.parametrize("blocks_of", [_blocks, _any_blocks], ids=["quantised", "any-bytes"])
def test_the_kernel_dequantizes_to_gguf_pys_weights_bit_for_bit(kind, blocks_of):
    for n, k in _shapes(kind):
        blocks, weight = blocks_of(kind, n, k, seed=n + k + kind)
        assert torch.isfinite(weight).all()
        assert torch.equal(torch.ops.logitls.gguf_dequantize(blocks, kind, k), weight)


def test_the_k_quant_quantiser_writes_what_gguf_py_reads():
    """bench/quantize.py's own K-quant blocks read back close to the weights they were made from."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    from logitls.bench.quantize import quantize

    weight = (np.random.default_rng(0).standard_normal((64, 512)) * 0.05).astype(np.float32)
    for kind, tolerance in ((Q4_K, 0.08), (Q5_K, 0.04), (Q6_K, 0.03)):
        raw = quantize(weight, kind)
        assert raw.shape == (64, 2 * BLOCK_BYTES[kind])
        error = np.abs(dequantize(raw, GGMLQuantizationType(kind)) - weight).max() / np.abs(weight).max()
        assert error < tolerance, (kind, error)


@pytest.mark.parametrize("kind", KINDS.values(), ids=KINDS.keys())
@pytest.mark.parametrize("shape", [0, 1, 2], ids=["small", "odd-rows", "default-shape"])
def test_the_kernel_computes_with_gguf_pys_weights(kind, shape):
    n, k = _shapes(kind)[shape]
    blocks, weight = _blocks(kind, n, k, seed=n + k + kind)
    assert torch.equal(torch.ops.logitls.gguf_dequantize(blocks, kind, k), weight)
    for rows in (1, 2, 4, 5, DENSE_ROWS, DENSE_ROWS + 1, 40):
        x = torch.randn(rows, k, generator=torch.Generator().manual_seed(rows))
        dense = x @ weight.t()
        out = torch.ops.logitls.gguf_linear(x, blocks, kind, k)
        assert out.shape == (rows, n)
        if rows > DENSE_ROWS:
            assert torch.equal(out, dense)  # the dense GEMM on the dequantized weight
        else:
            torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5 * float(dense.abs().max()))


def test_the_kernel_refuses_what_does_not_fit():
    blocks, _ = _blocks(Q4_1, 16, 64, seed=1)
    with pytest.raises(RuntimeError, match="inputs do not fit"):
        torch.ops.logitls.gguf_linear(torch.randn(1, 96), blocks, Q4_1, 96)
    with pytest.raises(RuntimeError, match="fp32"):
        torch.ops.logitls.gguf_linear(torch.randn(1, 64, dtype=torch.bfloat16), blocks, Q4_1, 64)
    blocks, _ = _blocks(Q4_K, 16, 256, seed=1)  # a K-quant row is whole blocks of 256
    with pytest.raises(RuntimeError, match="inputs do not fit"):
        torch.ops.logitls.gguf_linear(torch.randn(1, 288), blocks, Q4_K, 288)


def test_the_plain_loop_computes_the_same(tmp_path):
    """The path CPUs without AVX2 take, run here in a process that asks for it: every kind, its
    weights bit for bit gguf-py's, a few rows and a prefill's many."""
    cases = {}
    for name, kind in KINDS.items():
        k = 2 * BLOCK_WEIGHTS[kind]
        blocks, weight = _any_blocks(kind, 40, k, seed=3 + kind)
        cases[name] = {"kind": kind, "k": k, "blocks": blocks, "weight": weight, "x": torch.randn(DENSE_ROWS + 3, k)}
    torch.save(cases, tmp_path / "cases.pt")
    code = ("import torch; from logitls.engine import kernels; assert kernels.available(); "
            f"cases = torch.load({str(tmp_path / 'cases.pt')!r}); print(kernels.cpu_path()); "
            "out = {name: (torch.ops.logitls.gguf_dequantize(c['blocks'], c['kind'], c['k']), "
            "[torch.ops.logitls.gguf_linear(c['x'][:rows], c['blocks'], c['kind'], c['k']) for rows in (1, 3, "
            f"{DENSE_ROWS + 3})]) for name, c in cases.items()}}; torch.save(out, {str(tmp_path / 'out.pt')!r})")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "LOGITLS_GGUF_KERNEL_PLAIN": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain"]
    for name, (weight, outputs) in torch.load(tmp_path / "out.pt").items():
        case = cases[name]
        assert torch.equal(weight, case["weight"]), name
        for out in outputs:
            dense = case["x"][:out.shape[0]] @ case["weight"].t()
            torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5 * float(dense.abs().max()), msg=name)


def test_the_avx2_path_runs_where_the_cpu_has_it():
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    assert kernels.cpu_path() == ("avx2" if {"avx2", "fma", "f16c"} <= flags else "plain")


# -- a damaged library in the cache: checked, rebuilt or left aside, never loaded into the server -------

def _damaged_cache(tmp_path, *, zero_after: int = 8192, with_manifest: bool = False):
    """A cache folder holding this build's library, zero-filled after `zero_after` bytes (what a crash
    during an unsynced write leaves); with the manifest of the whole library, if asked."""
    import shutil

    whole = kernels.library_path()
    cache = tmp_path / "cache"
    damaged = cache / whole.relative_to(kernels.library_path().parents[2])
    damaged.parent.mkdir(parents=True)
    data = whole.read_bytes()
    damaged.write_bytes(data[:zero_after] + bytes(len(data) - zero_after))
    if with_manifest:
        shutil.copy(kernels.manifest_path(whole), kernels.manifest_path(damaged))
    return cache, damaged


def _available_in_a_child(cache, **env):
    code = ("import logging, sys; logging.basicConfig(stream=sys.stderr); from logitls.engine import kernels; "
            "print(kernels.available(), kernels.cpu_path())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "LOGITLS_CACHE_DIR": str(cache), **env})


def test_a_damaged_library_is_rebuilt_and_recorded(tmp_path):
    cache, library = _damaged_cache(tmp_path)
    result = _available_in_a_child(cache)
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.split()[0] == "True"
    manifest = json.loads(kernels.manifest_path(library).read_text())
    assert manifest["size"] == library.stat().st_size
    assert manifest["sha256"] == hashlib.sha256(library.read_bytes()).hexdigest()
    assert manifest["checked"] is True  # loaded once in a child; later starts load it directly
    assert not [p for p in library.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize("with_manifest, why", [(False, "killed a process with SIG"), (True, "is damaged")])
def test_a_damaged_library_that_cannot_be_rebuilt_leaves_the_weights_exact(tmp_path, with_manifest, why):
    cache, _ = _damaged_cache(tmp_path, with_manifest=with_manifest)
    result = _available_in_a_child(cache, CXX="false")  # a compiler that always fails
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stdout.split() == ["False"]
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "fp32 GGUF kernel is unavailable" in warnings[0] and "exact" in warnings[0]


async def test_the_server_starts_with_a_damaged_library(tmp_path):
    """Through `logitls serve`: the default model loads with exact weights and one warning, where the
    damaged library used to end the process with SIGSEGV after `initialize`, silently."""
    from conftest import server_status, start_session
    from logitls.engine.loading import cache_root

    cache, _ = _damaged_cache(tmp_path)
    for entry in cache_root().iterdir():  # the converted default model, shared; not the kernels
        if entry.name != "kernels":
            (cache / entry.name).symlink_to(entry)
    client = await start_session({"model": "default"}, env={"LOGITLS_CACHE_DIR": str(cache), "CXX": "false"})
    try:
        status = await server_status(client)
        assert status["state"] == "ready" and status["weights"] == "exact", status
        told = [m.message for m in client.log_messages if "fp32 GGUF kernel is unavailable" in m.message]
        assert len(told) == 1, [m.message for m in client.log_messages]
    finally:
        await client.shutdown_session()
