"""Start-up, settings, model (re)loading, logging and document lifetime.

`initialize` answers at once: the model loads afterwards on the worker thread, with `$/progress`
where the client supports it. Requests that arrive meanwhile wait for it (bounded by
`modelWaitSeconds`). A model that fails to load is reported once with `window/showMessage`; the
server keeps answering (empty results) and loads again when the settings change.

Where it can (engine/lean_model.py), the first model is a transformers-free stand-in that answers
~1.5 s sooner; transformers' model then loads in the first quiet moment and takes its place
(`Engine.adopt`), with the same numbers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
import time
import uuid

from lsprotocol import types

from ..settings import Settings, merge_settings
from .model_download import fetch_default_model
from .server import LogitlsServer, logger
from .worker import PRIORITY_BACKGROUND, JobCancelled

STATUS_COMMAND = "logitls.status"
# transformers' model replaces a lean stand-in once the model thread has been idle this long
ADOPT_AFTER_IDLE_SECONDS = 1.0
ADOPT_POLL_SECONDS = 0.25
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


def _supports_progress(server: LogitlsServer) -> bool:
    window = server.client_capabilities.window
    return bool(window and window.work_done_progress)


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


def refresh_lens_views(server: LogitlsServer) -> None:
    """After a lens setting changed (`lens.view`, the ranks, decision points): ask the client to fetch
    the colours, diagnostics and code lenses again, where it says it can be asked."""
    workspace = server.client_capabilities.workspace
    if workspace is None:
        return
    for capability, send in ((workspace.semantic_tokens, server.workspace_semantic_tokens_refresh),
                             (workspace.diagnostics, server.workspace_diagnostic_refresh),
                             (workspace.code_lens, server.workspace_code_lens_refresh)):
        if capability is not None and capability.refresh_support:
            future = send(None)
            # an error answer (a client that advertised but did not implement it) is only logged
            future.add_done_callback(lambda done: done.cancelled() or done.exception() is None
                                     or logger.debug("refresh failed: %s", done.exception()))


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
    reloading = server.engine is not None

    def load(_should_stop):
        from ..engine import Engine

        server.compare_engine = None  # compared against the old model: loaded again beside the new one
        if server.engine is not None:
            server.engine.forget_all()  # free the old caches before the new weights arrive
        if settings.backend == "openai":
            return load_openai_backend(server, settings, loop)
        fetch_default_model(server, settings.model, token, loop)  # first use of a wheel install
        engine = Engine.load_lean(settings.model, dtype=settings.dtype, device=settings.device,
                                  threads=settings.threads, weights=settings.weights)
        if engine is None:
            engine = Engine.load(settings.model, dtype=settings.dtype, device=settings.device, threads=settings.threads,
                                 weights=settings.weights, trust_remote_code=settings.trust_remote_code)
        if not reloading:  # the first model: nothing to collect (a replaced one is, once let go: below)
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
        if hasattr(engine, "check_lean_step"):  # keystrokes take the lean step once it is checked, in idle time
            server.worker.enqueue(lambda _stop: engine.check_lean_step(), key="lean-check",
                                  priority=PRIORITY_BACKGROUND)
        took = time.monotonic() - started
        logger.info("model %s ready (%s, %s, %s) in %.1f s", settings.model, engine.loaded.source,
                    engine.loaded.device, engine.loaded.dtype, took)
        loaded = getattr(engine, "loaded", None)
        if loaded is not None and loaded.note:
            logger.warning("%s", loaded.note)
        weights = ""
        if loaded is not None and loaded.weights not in (None, "exact"):
            kernel = getattr(loaded, "kernel", "")
            weights = f", {loaded.weights} weights" + (f" ({kernel} kernel)" if kernel else "")
        kernels = sys.modules.get("logitls.engine.kernels")  # imported by a load that looked for it
        if not weights and kernels is not None and kernels.building():
            weights = ", exact weights while the fast kernel is built for the next start"
        server.set_status("ready", f"{settings.model} on {engine.loaded.device}{weights}")
        message = f"Model ready ({took:.1f} s)"
        if getattr(loaded, "forward", None) == "lean":
            server.transformers_load = asyncio.create_task(take_transformers_model(server, engine, generation))
    finally:
        if token is not None:
            server.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))
        if reloading and generation == server.load_generation:
            # the old model is let go now (a stand-in's handover task notices within a poll): collect it
            loop.call_later(2 * ADOPT_POLL_SECONDS, lambda: server.worker.enqueue(
                lambda _stop: settle_heap(collect=True), key="settle-heap", priority=PRIORITY_BACKGROUND))
    server.model_settled.set()


def settle_heap(collect: bool) -> None:
    """Put everything imported and loaded so far out of the garbage collector's sight (gc.freeze): it
    lives as long as the model, and a full collection otherwise walks torch's and transformers' millions
    of objects. Measured: the first healed menu builds 49k small lists, which took 0.15 s instead of
    0.02 s. `collect`: first collect what a model that was replaced left in reference cycles."""
    if collect:
        gc.unfreeze()
        gc.collect()
        _return_free_heap()
    gc.freeze()


def _return_free_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc keeps them otherwise): what a replaced
    model's tensors and the stand-in's tokenizer held."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


# What transformers' model code imports, heaviest first, each a step of its own (see take_transformers_model)
IMPORT_STEPS = ("sympy", "torch.distributed.tensor", "torch._inductor", "torch._dynamo", "transformers",
                "transformers.modeling_utils")


async def take_transformers_model(server: LogitlsServer, engine, generation: int) -> None:
    """Load transformers' model of the stand-in's folder and have it take the stand-in's place, in
    quiet moments (the model thread idle for ADOPT_AFTER_IDLE_SECONDS).

    Its imports hold the GIL for ~2.4 s: on a side thread they would stall every keystroke served
    meanwhile (measured: a 16 ms keystroke took 0.3-1.6 s), and as one job on the model thread a
    keystroke could wait for all of it. So they run on the model thread in steps of one module each
    (IMPORT_STEPS, then the model's own module; 0.2-0.45 s each), then the load and the handover, each
    step after an idle second: while the user types, nothing of it runs, and a keystroke that comes
    just as a step starts waits for that step alone. Where it fails, the stand-in, which gives the
    same numbers, goes on serving."""
    import importlib

    name = engine.loaded.name  # not the stand-in itself: nothing here may keep it alive after the handover

    async def quiet() -> bool:
        """Wait until the model thread has been idle a while; False if the stand-in is replaced meanwhile."""
        while True:
            await asyncio.sleep(ADOPT_POLL_SECONDS)
            if not _still_standing_in(server, engine, generation):
                return False
            if server.transformers_gate.is_set() and server.worker.idle_seconds() >= ADOPT_AFTER_IDLE_SECONDS:
                return True

    def step(module: str):
        def run(should_stop):
            if should_stop():
                raise JobCancelled("stopped")
            try:
                importlib.import_module(module)
            except ImportError:  # a torch build without it: transformers does without it too
                pass
        return run

    def load_and_adopt(should_stop):
        if should_stop():
            raise JobCancelled("stopped")
        full = engine.load_transformers_model(threads=server.settings.threads, weights=server.settings.weights)
        agreed = engine.adopt(full)
        settle_heap(collect=True)  # the stand-in's weights go
        return agreed

    kind = getattr(engine.model.config, "model_type", "")
    steps = [step(module) for module in (*IMPORT_STEPS, f"transformers.models.{kind}.modeling_{kind}")]
    started = time.monotonic()
    try:
        for job in [*steps, load_and_adopt]:
            if not await quiet():
                return
            agreed = await server.worker.submit(job, key="model-adopt", priority=PRIORITY_BACKGROUND)
    except JobCancelled:
        return
    except Exception as exc:  # noqa: BLE001 - ModelLoadError or anything transformers raises
        logger.warning("transformers' model of %s did not load (%s); the lean stand-in goes on serving",
                       name, exc)
        return
    logger.info("transformers' model took over from the lean stand-in in %.1f s (%s)", time.monotonic() - started,
                "same logits" if agreed else "its logits differed: cached documents dropped")
    server.worker.enqueue(lambda _stop: engine.check_lean_step(), key="lean-check", priority=PRIORITY_BACKGROUND)


def _still_standing_in(server: LogitlsServer, engine, generation: int) -> bool:
    """Whether `engine` (a stand-in) still serves: no other load, nor the end, has come meanwhile."""
    return generation == server.load_generation and server.engine is engine and not server.shutdown_requested


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


async def begin_progress(server: LogitlsServer, title: str, message: str, cancellable: bool) -> str | None:
    """Create and begin a work-done progress if the client supports it; None if not.

    The create request is bounded: a client that never answers it must not hold up the work.
    """
    if not _supports_progress(server):
        return None
    token = f"logitls-{uuid.uuid4()}"
    try:
        await asyncio.wait_for(server.work_done_progress.create_async(token), 5)
        server.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=title, message=message, cancellable=cancellable, percentage=0 if cancellable else None))
    except Exception:  # noqa: BLE001 - progress is a courtesy; the work goes on without it
        logger.debug("work done progress unavailable", exc_info=True)
        return None
    return token


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
    from .compare import sync_compare_model

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
        uri = params.text_document.uri
        ls.documents.forget(uri)
        if ls.engine is not None:
            # Queued after any job still running for it: those stop at their next check (the document
            # is closed), so none can put the KV cache back once this has run.
            engine = ls.engine
            ls.worker.enqueue(lambda _stop: engine.forget(uri), priority=-1)

    @server.command(STATUS_COMMAND)
    def status(ls: LogitlsServer, *args) -> dict:
        """What the server holds now: for status bars, and for "why is it using this much memory?".
        Answered from the event loop, without waiting for the model thread."""
        engine = ls.engine
        cached: list[str] = []
        for _ in range(3):  # the model thread may change the list mid-copy: try again
            try:
                cached = list(engine.cached_documents_keys()) if engine is not None else []
                break
            except RuntimeError:
                continue
        return {"state": ls.model_state, "model": ls.settings.model, "error": ls.model_error,
                "openDocuments": sorted(ls.workspace.text_documents), "documentRecords": len(ls.documents),
                "cachedDocuments": cached, "queuedJobs": ls.worker.queued(),
                "compareModel": ls.compare_spec if ls.compare_engine is not None else None,
                "weights": getattr(getattr(engine, "loaded", None), "weights", None),
                "kernel": getattr(getattr(engine, "loaded", None), "kernel", None) or None,
                "leanDecoding": getattr(engine, "lean_decoding", None),
                "forward": getattr(getattr(engine, "loaded", None), "forward", None)}

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: LogitlsServer, *args) -> None:
        ls.shutdown_requested = True
