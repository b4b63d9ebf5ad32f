"""Finding and converting models: the embedded default, atomic conversion, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from logitls.engine.loading import ModelLoadError, converted_folder, default_gguf, load_model, resolve_source


def test_default_model_is_converted_once_into_the_cache(default_engine):
    folder = converted_folder(default_gguf())
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    assert not list(folder.parent.glob(".converting-*"))
    assert resolve_source("default")[0] == str(folder)  # a second start reuses it, no conversion


def test_a_killed_conversion_leaves_no_half_model(tmp_path):
    # The hook stops the converter with every file written but not yet renamed into place.
    env = dict(os.environ, LOGITLS_CACHE_DIR=str(tmp_path), LOGITLS_TEST_STOP_BEFORE_RENAME="1")
    code = "from logitls.engine.loading import convert_gguf, default_gguf; convert_gguf(default_gguf())"
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
    assert "converting" in process.stderr.readline()  # progress is shown on stderr
    while "staged" not in (line := process.stderr.readline()):
        assert line, "the converter ended without reaching the rename"
    process.send_signal(signal.SIGKILL)
    process.wait()
    converted = tmp_path / "converted"
    assert not [p for p in converted.iterdir() if not p.name.startswith(".converting-")]
    from logitls.engine.loading import _remove_abandoned_staging

    _remove_abandoned_staging(converted)
    assert list(converted.iterdir()) == []


def _model_with_remote_code(folder, marker):
    """A model folder whose config names Python code to run (auto_map), as hub models with custom
    architectures do; importing that code leaves `marker` behind."""
    import json

    folder.mkdir()
    code = f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import PretrainedConfig\n" \
           "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    (folder / "configuration_evil.py").write_text(code)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                                           "AutoModelForCausalLM": "configuration_evil.EvilConfig"}}))


def test_remote_code_is_never_trusted_implicitly(tiny_models, tmp_path):
    folder, marker = tmp_path / "remote-code-model", tmp_path / "code-ran"
    _model_with_remote_code(folder, marker)
    with pytest.raises(ModelLoadError):
        load_model(str(folder), device="cpu")
    assert not marker.exists()  # the shipped code never ran
    with pytest.raises(Exception):  # trusted on request: the code runs (and this toy model then fails)
        load_model(str(folder), device="cpu", trust_remote_code=True)
    assert marker.exists()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dtype_setting_is_applied(tiny_models, dtype):
    import torch

    loaded = load_model(str(tiny_models["gpt2"]), device="cpu", dtype=dtype)
    assert next(loaded.model.parameters()).dtype == getattr(torch, dtype)


def test_the_default_model_in_bfloat16_loads_as_plain_weights_without_a_gguf_warning(capfd):
    # The converted folder's config once kept the GGUF's quantization_config: transformers then took the
    # folder for packed GGUF blocks and warned that bf16 is slow for them.
    loaded = load_model("default", device="cpu", dtype="bfloat16")
    assert getattr(loaded.model.config, "quantization_config", None) is None
    assert "GGUF" not in capfd.readouterr().err


def test_bfloat16_probabilities_are_computed_in_float32(tiny_models):
    from logitls.engine import Engine

    engine = Engine.load(str(tiny_models["gpt2"]), device="cpu", dtype="bfloat16")
    choices = engine.next_tokens("hello", engine.vocab_size).choices
    assert sum(c.prob for c in choices) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("bad, message", [("float8", "unknown dtype"), ("fp32", "unknown dtype")])
def test_bad_dtype(tiny_models, bad, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(str(tiny_models["gpt2"]), dtype=bad)


def test_bad_device_and_threads(tiny_models):
    import torch

    with pytest.raises(ModelLoadError, match="unknown device"):
        load_model(str(tiny_models["gpt2"]), device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            load_model(str(tiny_models["gpt2"]), device="cuda")
    before = torch.get_num_threads()
    load_model(str(tiny_models["gpt2"]), device="cpu", threads=1)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(before)


def test_gguf_cache_key_covers_the_whole_file(tmp_path, monkeypatch):
    """Two fine-tunes with the same name and size differ in the middle of their tensor data."""
    from logitls.engine import loading

    monkeypatch.setenv("LOGITLS_CACHE_DIR", str(tmp_path / "cache"))
    data = bytearray(os.urandom(3 << 20))
    first, second = tmp_path / "a" / "model.gguf", tmp_path / "b" / "model.gguf"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_bytes(data)
    data[len(data) // 2] ^= 0xFF
    second.write_bytes(data)
    assert converted_folder(first) != converted_folder(second)

    hashed = []
    original = loading._sha256_of_file
    monkeypatch.setattr(loading, "_sha256_of_file", lambda path: hashed.append(path) or original(path))
    key = loading._gguf_key(first)
    assert hashed == [] and key == loading._gguf_key(first)  # remembered across calls (and restarts)
    data[0] ^= 0xFF
    first.write_bytes(data)  # changed in place: new mtime, hashed again
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 1))
    assert loading._gguf_key(first) != key and hashed == [first.resolve()]
