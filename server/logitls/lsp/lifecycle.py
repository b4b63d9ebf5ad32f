"""Start-up, settings, model (re)loading, logging and document lifetime.

`initialize` answers at once: the model loads afterwards on the worker thread, with `$/progress`
where the client supports it. Requests that arrive meanwhile wait for it (bounded by
`modelWaitSeconds`). A model that fails to load is reported once with `window/showMessage`; the
server keeps answering (empty results) and loads again when the settings change.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time

from lsprotocol import types

from ..settings import Settings, merge_settings
from .compare import sync_compare_model
from .lens import refresh_lens_views
from .progress import begin_progress
from .model_download import fetch_default_model
from .server import LogitlsServer, logger

STATUS_COMMAND = "logitls.status"
LOG_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}
MESSAGE_TYPES = {logging.ERROR: types.MessageType.Error, logging.WARNING: types.MessageType.Warning,
                 logging.INFO: types.MessageType.Info, logging.DEBUG: types.MessageType.Log}


class ClientLogHandler(logging.Handler):
    """Forwards log records to the editor as window/logMessage (from any thread)."""

    def __init__(self, server: LogitlsServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.server, self.loop = server, loop

    def emit(self, record: logging.LogRecord) -> None:
        kind = MESSAGE_TYPES.get(record.levelno if record.levelno in MESSAGE_TYPES else logging.ERROR,
                                 types.MessageType.Error)
        params = types.LogMessageParams(type=kind, message=self.format(record))

        def send() -> None:
            try:
                self.server.window_log_message(params)
            except Exception:  # noqa: BLE001 - the client is gone; stderr still has it
                pass

        if threading.current_thread() is threading.main_thread():
            send()
        else:
            self.loop.call_soon_threadsafe(send)


def apply_log_level(server: LogitlsServer) -> None:
    logger.setLevel(LOG_LEVELS[server.settings.log_level])


def _supports_configuration(server: LogitlsServer) -> bool:
    workspace = server.client_capabilities.workspace
    return bool(workspace and workspace.configuration)


def update_settings(server: LogitlsServer, wire: object, origin: str) -> Settings:
    """Merge settings from the editor; warn about invalid ones, which keep their previous value."""
    previous = server.settings
    server.settings, problems = merge_settings(previous, wire, at_start=origin == "initializationOptions")
    for problem in problems:
        logger.warning("%s: %s", origin, problem)
    invalid = [p for p in problems if not p.startswith(("unknown setting", "ignored"))]
    if invalid:
        server.tell("invalid settings: " + "; ".join(invalid), types.MessageType.Warning)
    apply_log_level(server)
    return previous


async def load_model(server: LogitlsServer) -> None:
    """(Re)load the model named by the settings on the worker thread.

    Only the newest load settles the server's state: an older one that finishes later (superseded
    by a settings change that needs a reload) changes nothing. Settings that changed during the
    load without needing one (topN, lens, …) reach the new engine as it arrives.
    """
    server.load_generation += 1
    generation = server.load_generation
    server.compare_spec = ""
    settings = server.settings
    server.model_settled.clear()
    server.set_status("loading", f"Loading {settings.model}…")
    token = await begin_progress(server, "logitls", f"Loading model {settings.model}…", cancellable=False)
    started = time.monotonic()
    loop = asyncio.get_running_loop()

    def load(_should_stop):
        from ..engine import Engine

        server.compare_engine = None  # compared against the old model: loaded again beside the new one
        if server.engine is not None:
            # The old model goes before the new one arrives: never two models in memory, and nothing
            # left to collect later, when a keystroke might wait for it. Requests meanwhile wait for
            # this load (model_settled is clear).
            server.engine = None
            settle_heap(collect=True)
        if settings.backend == "openai":
            return load_openai_backend(server, settings, loop)
        fetch_default_model(server, settings.model, token, loop)  # first use of a wheel install
        engine = Engine.load(settings.model, dtype=settings.dtype, device=settings.device, threads=settings.threads,
                             weights=settings.weights, trust_remote_code=settings.trust_remote_code)
        settle_heap(collect=False)
        return engine

    message = "Model failed to load"
    try:
        engine = await server.worker.submit(load, key="model-load", priority=-1)
    except Exception as exc:  # noqa: BLE001 - ModelLoadError, or anything transformers raises
        if generation != server.load_generation:
            return  # superseded: the newer load reports
        from ..engine.loading import ModelLoadError

        reason = str(exc) if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
        server.engine = None
        server.model_error = f"the model {settings.model!r} failed to load: {reason}"
        logger.error("%s", server.model_error)
        server.tell(f"{server.model_error}. Fix the `logitls.model` setting; completions are empty until then.",
                    types.MessageType.Error)
        server.set_status("failed", reason)
    else:
        if generation != server.load_generation:
            return  # superseded: the newer load reports
        server.engine = engine
        server.model_error = None
        apply_runtime_settings(server)  # queued ahead of any request: the settings of now, not of the load's start
        took = time.monotonic() - started
        logger.info("model %s ready (%s, %s, %s) in %.1f s", settings.model, engine.loaded.source,
                    engine.loaded.device, getattr(engine.loaded, "server_kind", None) or engine.loaded.dtype, took)
        loaded = getattr(engine, "loaded", None)
        if loaded is not None and loaded.note:
            logger.warning("%s", loaded.note)
        path = numbers_path(loaded)
        kernels = sys.modules.get("logitls.engine.kernels")  # imported by a load that looked for it
        if loaded is not None and loaded.weights == "exact" and kernels is not None and kernels.building():
            path += ", exact weights while the fast kernel is built for the next start"
        server.set_status("ready", f"{settings.model} on {engine.loaded.device}{path}")
        message = f"Model ready ({took:.1f} s)"
    finally:
        if token is not None:
            server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
    server.model_settled.set()


def numbers_path(loaded) -> str:
    """Which code computes the numbers, for the status line: ", native forward, packed weights (fp32
    kernel, 211 layers)"; empty for a remote backend."""
    if getattr(loaded, "forward", None) is None:  # a remote backend: its server computes them
        return ""
    text = f", {loaded.forward} forward"
    if loaded.weights not in (None, "exact"):
        text += f", {loaded.weights} weights ({loaded.kernel} kernel, {loaded.packed_layers} layers)"
    return text


def settle_heap(collect: bool) -> None:
    """Put everything imported and loaded so far out of the garbage collector's sight (gc.freeze): it
    lives as long as the model, and a full collection otherwise walks torch's millions of objects while
    the first healed menu builds its many small lists. `collect`: first collect what a model that is
    being replaced left in reference cycles."""
    if collect:
        gc.unfreeze()
        gc.collect()
        _return_free_heap()
    gc.freeze()


def _return_free_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc keeps them otherwise): what a replaced
    model's tensors held."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def load_openai_backend(server: LogitlsServer, settings: Settings, loop: asyncio.AbstractEventLoop):
    """The `openai` backend (an OpenAI-compatible server) in place of the local Engine; its failures
    reach the editor as one showMessage per kind of failure (and one when the server is back)."""
    from ..engine.openai_backend import OpenAIBackend

    kinds = {"error": types.MessageType.Error, "warning": types.MessageType.Warning, "info": types.MessageType.Info}

    def notify(level: str, message: str) -> None:
        logger.log(logging.ERROR if level == "error" else logging.INFO, "%s", message)
        loop.call_soon_threadsafe(server.tell, message, kinds.get(level, types.MessageType.Info))

    return OpenAIBackend.connect(settings.endpoint, model=settings.api_model, api_key_env=settings.api_key_env,
                                 timeout=settings.api_timeout_seconds, max_context_tokens=settings.max_context_tokens,
                                 alternatives=settings.hover_alternatives, cached_documents=settings.cached_documents,
                                 notify=notify)


def apply_runtime_settings(server: LogitlsServer) -> None:
    engine, settings = server.engine, server.settings
    if engine is None:
        return

    def configure(_should_stop):
        options = {"max_context_tokens": settings.max_context_tokens, "alternatives": settings.hover_alternatives,
                   "cached_documents": settings.cached_documents}
        if not engine.capabilities.scored_remotely:  # the local engine's own cache settings
            options["score_prefill"] = settings.lens.enabled
            # Room every window leaves for generation: inline completion and generate then reuse the
            # window (and KV cache) that completion and the lens already fed.
            options["generation_reserve"] = max(settings.inline.max_new_tokens, settings.generate.max_new_tokens)
        engine.configure(**options)

    # Priority -1: ahead of every request already queued for the model.
    server.worker.enqueue(configure, key="configure", priority=-1)
    sync_compare_model(server)


def register(server: LogitlsServer) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls: LogitlsServer, params: types.InitializeParams) -> None:
        loop = asyncio.get_running_loop()
        ls.client_info = params.client_info  # who the client is: VS Code runs command links in a hover
        handler = ClientLogHandler(ls, loop)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        options = params.initialization_options
        if isinstance(options, dict) and "logitls" in options and isinstance(options["logitls"], dict):
            options = options["logitls"]  # some clients nest the section name
        update_settings(ls, options, "initializationOptions")

    @server.feature(types.INITIALIZED)
    async def initialized(ls: LogitlsServer, params: types.InitializedParams) -> None:
        if _supports_configuration(ls):
            try:
                pulled = await ls.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="logitls")]))
                if pulled and isinstance(pulled[0], dict) and pulled[0]:
                    update_settings(ls, pulled[0], "workspace/configuration")
            except Exception:  # noqa: BLE001 - a client may advertise it and still fail
                logger.debug("workspace/configuration failed", exc_info=True)
        await load_model(ls)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: LogitlsServer, params: types.DidChangeConfigurationParams) -> None:
        wire = params.settings
        if _supports_configuration(ls):
            try:
                pulled = await ls.workspace_configuration_async(
                    types.ConfigurationParams(items=[types.ConfigurationItem(section="logitls")]))
                wire = pulled[0] if pulled else None
            except Exception:  # noqa: BLE001
                logger.debug("workspace/configuration failed; using the pushed settings", exc_info=True)
        if isinstance(wire, dict) and isinstance(wire.get("logitls"), dict):
            wire = wire["logitls"]
        if not wire:
            return
        previous = update_settings(ls, wire, "didChangeConfiguration")
        if ls.settings.needs_reload(previous) or (ls.engine is None and ls.model_settled.is_set()):
            logger.info("model settings changed: loading %s", ls.settings.model)
            await load_model(ls)
        else:
            apply_runtime_settings(ls)
        if ls.settings.lens != previous.lens:
            refresh_lens_views(ls)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: LogitlsServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.forget_document(params.text_document.uri)

    @server.command(STATUS_COMMAND)
    def status(ls: LogitlsServer, *args) -> dict:
        """What the server holds now: for status bars, and for "why is it using this much memory?".
        Answered from the event loop, without waiting for the model thread."""
        engine = ls.engine
        loaded = getattr(engine, "loaded", None)
        cached = _cached_documents(engine)
        return {"state": ls.model_state, "model": ls.settings.model, "error": ls.model_error,
                "openDocuments": sorted(ls.workspace.text_documents), "documentRecords": len(ls.documents),
                "cachedDocuments": cached, "queuedJobs": ls.worker.queued(),
                "compareModel": ls.compare_spec if ls.compare_engine is not None else None,
                "compareCachedDocuments": _cached_documents(ls.compare_engine),
                "weights": getattr(loaded, "weights", None),
                "kernel": getattr(loaded, "kernel", None) or None,
                "packedLayers": getattr(loaded, "packed_layers", None),
                "forward": getattr(loaded, "forward", None), "dtype": getattr(loaded, "dtype", None),
                "note": getattr(loaded, "note", None) or None}

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: LogitlsServer, *args) -> None:
        ls.shutdown_requested = True


def _cached_documents(engine) -> list[str]:
    for _ in range(3):  # the model thread may change the list mid-copy: try again
        try:
            return list(engine.cached_documents_keys()) if engine is not None else []
        except RuntimeError:
            continue
    return []
