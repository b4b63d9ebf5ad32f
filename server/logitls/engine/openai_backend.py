"""A second engine backend: an OpenAI-compatible inference server (`/v1/completions`).

`OpenAIBackend` answers the same calls as the local `Engine` (next_tokens, token_scores, greedy,
generate_text, forget, forget_all, configure; vocab_size, eos_ids, context_window, loaded) from a
server such as llama.cpp's or vLLM's, so the language server and the CLI need not know which one
they talk to:

- next tokens: `max_tokens: 1, temperature: 0, logprobs: k`; the top-k of the first position.
  A server that caps k (vLLM's `--max-logprobs`, OpenAI's 5) answers 400; the cap is the limit the
  message states (`stated_limit`: known phrasings only, never any number in it, such as the URL's),
  else 5 tried once; kept once the server answers, and stated once through `notify`;
- per-token scores (hover): `echo: true, logprobs: k, max_tokens: 1` (never 0: llama-cpp-python
  reads 0 as "no limit"); the echoed prompt tokens carry their log-probabilities and top-k. When
  the echo is shifted by one (llama-cpp-python with a model without BOS) its blanked first entry
  held the distribution that predicts token 1: that one is asked for separately (the next tokens
  after token 0). A server that does not echo prompt log-probabilities (llama.cpp's own
  `llama-server`) is detected on the first hover; hover then answers nothing, and `notify` says
  why, once;
- greedy: `temperature: 0, stream: true` (server-sent events), one step per streamed chunk.

HTTP goes through one `httpx.AsyncClient` (connection reuse, timeouts) on a private event loop in
a daemon thread. The caller's thread waits on it and polls `should_stop()`: when it fires the
request's task is cancelled, which closes the connection and with it a streaming response.
Connection errors and 5xx are retried with exponential backoff (fewer tries while the server is
known to be down, so keystrokes stay quick). Failures never raise to the caller: the result is
empty, and `notify("error", ...)` is called once per kind of failure until a request succeeds
again, when `notify("info", ...)` says the server is back.

This module knows nothing of LSP and does not import torch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import math
import os
import queue
import re
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator

import httpx

from .types import NextTokens, TextScores, Token, TokenChoice, TokenScore

StopCheck = Callable[[], bool]
Notify = Callable[[str, str], None]  # (level: "error" | "warning" | "info", message)

EOS_ID = -1  # the synthetic token a greedy stream ends with when the server stopped on end-of-sequence
DEFAULT_CAP = 5  # top logprobs when a server refuses more and does not say its maximum (OpenAI's limit)
POLL_SECONDS = 0.02
SPECIAL = re.compile(r"^(<\|[^|]*\|>|<s>|</s>|<unk>|<pad>|\[(BOS|EOS|PAD|UNK)\])$")
CONTEXT_ERROR = re.compile(r"context|too long|exceed|maximum.*length", re.IGNORECASE)
# How servers state their top-logprobs limit in a refusal; the number is the group. Only these phrasings
# count: other numbers in the message (the requested count, a URL's /v1, an address's octets) never do.
_N = r"(\d+)(?![\d.]*\d)"  # a whole number, not the start of 10.0.0.1 or 1.5
LIMIT_PHRASES = [re.compile(p, re.IGNORECASE) for p in (
    r"max(?:imum)?\s+allowed\s*(?:is|:|=)?\s*" + _N,  # vLLM: "... which is greater than max allowed: 20"
    r"cannot request more than\s+" + _N,  # older vLLM: "Cannot request more than 5 logprobs."
    r"(?:greater than|more than|above|exceeds?)\s+the\s+max(?:imum)?(?:\s+value)?\s*(?:of|is|:)?\s*" + _N,  # Together
    r"max(?:imum)?\s+(?:value\s+)?(?:for\s+\S+\s+)?is\s+" + _N,  # "The maximum value for logprobs is 5"
    r"(?:at most|no more than|not more than|less than or equal to|<=|≤)\s*" + _N,  # OpenAI, llama.cpp-style
)]


class Cancelled(Exception):
    """The caller's stop check fired; the request was abandoned and its connection closed."""


class BackendError(Exception):
    """A request that failed for good: `kind` groups failures for the one-message-per-kind rule."""

    def __init__(self, kind: str, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.kind, self.status, self.body = kind, status, body


@dataclass
class GreedyStep:
    token: Token
    text: str


@dataclass(frozen=True)
class RemoteModel:
    """What `Engine.loaded` says for a local model, for display (`lifecycle` logs these)."""

    name: str
    source: str  # the endpoint
    device: str  # "remote"
    dtype: str  # the kind of server, as detected: "llama-cpp-python", "llama.cpp", "vllm", "openai-compatible"
    model: Any = None
    tokenizer: Any = None


def stated_limit(message: str) -> int | None:
    """The top-logprobs limit a server's refusal states, or None when it states none."""
    for phrase in LIMIT_PHRASES:
        match = phrase.search(message)
        if match:
            return int(match.group(1))
    return None


def _private_channel(url: str) -> bool:
    """Whether a key may travel to `url`: https anywhere, plain http only to this machine (loopback)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https":
        return True
    host = (parsed.hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(endpoint: str) -> str:
    url = endpoint.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        url = "http://" + url
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIBackend:
    """The Engine interface over an OpenAI-compatible `/v1/completions` server. Not thread-safe, like Engine."""

    def __init__(
        self,
        endpoint: str,
        *,
        model: str = "auto",
        api_key_env: str = "",
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_context_tokens: int = 0,
        alternatives: int = 10,
        cached_documents: int = 8,
        notify: Notify | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.base_url = _base_url(endpoint)
        self.requested_model = model or "auto"
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.notify = notify
        self._transport = transport
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._lock = threading.Lock()
        self._ids: dict[str, int] = {}
        self._tokens: list[Token] = []
        self.server_kind = "openai-compatible"
        self.model_name: str | None = None if self.requested_model == "auto" else self.requested_model
        # Unknown until the server says (llama.cpp's meta.n_vocab); large so that callers' min(n, vocab) holds.
        self.vocab_size = 1 << 30
        self.vocab_size_known = False
        self.model_context = 0  # unknown: the server cuts or refuses; we cut from the left on refusal
        self.top_n_cap: int | None = None
        self.echo_supported: bool | None = None  # None: not probed yet
        self._echo_shifted: bool | None = None  # see _echo_is_shifted; None: not seen yet
        self._after_first: dict[tuple[str, int], Any] = {}  # (first token's text, k) -> the distribution after it
        self._scored: dict[str, tuple[str, TextScores]] = {}  # document -> (text, scores) of its last hover
        self.remote = True  # callers that pay per scored token (hover) send only the text they need
        self.down: str | None = None  # the kind of failure currently reported, None when healthy
        self._told: set[str] = set()
        self.key_withheld = False  # a key was set but not sent: plain http off this machine
        self.eos_ids = {EOS_ID}
        self.eos_token = Token(EOS_ID, "", special=True)
        self.configure(max_context_tokens=max_context_tokens, alternatives=alternatives,
                       cached_documents=cached_documents)
        self.loaded = RemoteModel(self.model_name or "auto", self.base_url, "remote", self.server_kind)

    # -- set-up -----------------------------------------------------------------------------

    @classmethod
    def connect(cls, endpoint: str, **options: Any) -> "OpenAIBackend":
        """A backend with the server probed once (model name, kind, vocabulary). A server that is
        down is reported through `notify` and probed again on the next request: never raises."""
        backend = cls(endpoint, **options)
        try:
            backend._run(backend._probe(), None)
        except BackendError as exc:
            backend._failed(exc)
        return backend

    def configure(self, *, max_context_tokens: int, alternatives: int, cached_documents: int) -> None:
        self.max_context_tokens = max_context_tokens
        self.context_window = max_context_tokens or self.model_context or 0
        self.alternatives = alternatives
        self.cached_documents = cached_documents  # the server keeps its own caches

    def forget(self, document: str) -> None:
        """Only the last hover's scores are kept per document: the server's prompt cache does the rest."""
        self._scored.pop(document, None)

    def cached_documents_keys(self) -> list[str]:
        return list(self._scored)

    def forget_all(self) -> None:
        """Called before a reload: close the connections (they reopen if this backend is used again)."""
        self._scored.clear()
        self._after_first.clear()
        self.close()

    def close(self) -> None:
        with self._lock:
            loop, client = self._loop, self._client
            self._loop = self._client = None
        if loop is None:
            return
        if client is not None:
            try:
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=2)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        loop.call_soon_threadsafe(loop.stop)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="logitls-http", daemon=True).start()
                headers = {}
                key = os.environ.get(self.api_key_env) if self.api_key_env else None
                if key and not _private_channel(self.base_url):
                    key, self.key_withheld = None, True
                    self._tell_once("plain-key", "warning", f"the API key in {self.api_key_env} is not sent to "
                                    f"{self.base_url}: plain http to another machine would show it to anyone on "
                                    f"the way. Use an https:// endpoint (or a tunnel to 127.0.0.1).")
                if key:
                    headers["Authorization"] = f"Bearer {key}"

                async def make() -> httpx.AsyncClient:
                    return httpx.AsyncClient(
                        base_url=self.base_url, headers=headers, transport=self._transport,
                        timeout=httpx.Timeout(self.timeout, connect=min(5.0, self.timeout)),
                        limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=60))

                self._client = asyncio.run_coroutine_threadsafe(make(), loop).result()
                self._loop = loop
            return self._loop

    # -- running coroutines from the caller's thread -------------------------------------------

    def _run(self, coro, should_stop: StopCheck | None) -> Any:
        """Run `coro` on the HTTP loop; cancel it (closing its connection) when should_stop() fires."""
        future = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        while True:
            try:
                return future.result(timeout=POLL_SECONDS)
            except concurrent.futures.TimeoutError:
                if should_stop is not None and should_stop():
                    future.cancel()
                    raise Cancelled() from None
            except concurrent.futures.CancelledError:
                raise Cancelled() from None

    # -- HTTP with retries --------------------------------------------------------------------

    async def _send(self, method: str, path: str, body: dict | None = None) -> Any:
        """One JSON request with retries on connection errors and 5xx; the parsed JSON answer."""
        tries = 1 if self.down in ("unreachable", "server") else 1 + self.retries
        last: BackendError | None = None
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                response = await self._client.request(method, path, json=body)
            except httpx.TimeoutException as exc:
                last = BackendError("timeout", f"the inference server at {self.base_url} did not answer within "
                                    f"{self.timeout:g} s ({type(exc).__name__})")
                continue
            except httpx.TransportError as exc:
                last = BackendError("unreachable", f"cannot reach the inference server at {self.base_url} "
                                    f"({type(exc).__name__}: {exc or 'connection failed'})")
                continue
            if response.status_code >= 500:
                last = self._http_error(response)
                continue
            if response.status_code >= 400:
                raise self._http_error(response)
            try:
                return response.json()
            except ValueError as exc:
                raise BackendError("malformed", f"the inference server at {self.base_url} sent malformed JSON "
                                   f"for {path}: {response.text[:120]!r}") from exc
        assert last is not None
        raise last

    def _http_error(self, response: httpx.Response) -> BackendError:
        text = response.text[:500]
        try:
            detail = response.json()
            detail = detail.get("error", detail) if isinstance(detail, dict) else detail
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
        except ValueError:
            detail = text
        status = response.status_code
        detail = str(detail)[:300]
        if status in (401, 403):
            env = f"the environment variable {self.api_key_env}" if self.api_key_env else "no API key variable"
            state = ("set, but not sent over plain http to another machine: use https" if self.key_withheld
                     else "set" if os.environ.get(self.api_key_env or "") else "unset")
            return BackendError("auth", f"the inference server at {self.base_url} refused the API key (HTTP {status}; "
                                f"key read from {env}, {state}): {detail}", status, text)
        if status == 404:
            return BackendError("not-found", f"the inference server at {self.base_url} has no model "
                                f"{self.model_name or self.requested_model!r} or no /v1/completions (HTTP 404): "
                                f"{detail}", status, text)
        kind = "server" if status >= 500 else "request"
        return BackendError(kind, f"the inference server at {self.base_url} answered HTTP {status}: {detail}",
                            status, text)

    async def _probe(self) -> None:
        """Which model and which kind of server: GET /v1/models."""
        answer = await self._send("GET", "/models")
        models = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(models, list):
            raise BackendError("malformed", f"the inference server at {self.base_url} sent no model list "
                               f"from /v1/models: {str(answer)[:120]!r}")
        ids = [m.get("id") for m in models if isinstance(m, dict)]
        if self.requested_model == "auto":
            if not ids:
                raise BackendError("not-found", f"the inference server at {self.base_url} serves no model")
            self.model_name = ids[0]
        elif self.requested_model not in ids and ids:
            raise BackendError("not-found", f"the inference server at {self.base_url} has no model "
                               f"{self.requested_model!r}; it serves {', '.join(map(str, ids))} "
                               f"(set `logitls.apiModel`)")
        entry = next((m for m in models if isinstance(m, dict) and m.get("id") == self.model_name), {})
        owner = str(entry.get("owned_by", "")).lower()
        meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
        if "vllm" in owner:
            self.server_kind = "vllm"
        elif owner == "llamacpp" or meta:
            self.server_kind = "llama.cpp"
        elif owner == "me":
            self.server_kind = "llama-cpp-python"
        if isinstance(meta.get("n_vocab"), int):
            self.vocab_size, self.vocab_size_known = meta["n_vocab"], True
        context = entry.get("max_model_len") or meta.get("n_ctx_train")
        if isinstance(context, int) and context > 0:
            self.model_context = context
            self.context_window = self.max_context_tokens or context
        self.loaded = RemoteModel(self.model_name or "auto", self.base_url, "remote", self.server_kind)

    async def _completion(self, body: dict) -> dict:
        if self.model_name is None:
            await self._probe()
        answer = await self._send("POST", "/completions", {"model": self.model_name, **self._extra(), **body})
        try:
            choice = answer["choices"][0]
            if not isinstance(choice, dict):
                raise TypeError
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError("malformed", f"the inference server at {self.base_url} sent a completion without "
                               f"choices: {str(answer)[:120]!r}") from exc
        return choice

    def _extra(self) -> dict:
        # llama-cpp-python applies repeat_penalty=1.1 unless told otherwise: greedy must be plain argmax.
        return {"repeat_penalty": 1.0} if self.server_kind in ("llama-cpp-python", "llama.cpp") else {}

    # -- health: one message per kind of failure, and one when the server is back -------------

    def _say(self, level: str, message: str) -> None:
        if self.notify is not None:
            try:
                self.notify(level, message)
            except Exception:  # noqa: BLE001 - telling the user must never break a request
                pass

    def _failed(self, exc: BackendError) -> None:
        if self.down != exc.kind:
            self.down = exc.kind
            self._say("error", f"{exc}. Results stay empty until the server answers again (backend `openai`, "
                               f"`logitls.endpoint`).")

    def _succeeded(self) -> None:
        if self.down is not None:
            self.down = None
            self._say("info", f"the inference server at {self.base_url} answers again ({self.model_name}).")

    def _tell_once(self, key: str, level: str, message: str) -> None:
        if key not in self._told:
            self._told.add(key)
            self._say(level, message)

    def _call(self, make, should_stop: StopCheck | None, empty: Any) -> Any:
        try:
            result = self._run(make(), should_stop)
        except BackendError as exc:
            self._failed(exc)
            return empty
        self._succeeded()
        return result

    # -- tokens ---------------------------------------------------------------------------------

    def token(self, text: str) -> Token:
        """Servers name tokens by their text: the same text always gets the same (synthetic) id."""
        token_id = self._ids.get(text)
        if token_id is None:
            token_id = self._ids[text] = len(self._tokens)
            special = bool(SPECIAL.match(text))
            self._tokens.append(Token(token_id, text, special=special,
                                      partial=not special and ("\ufffd" in text or text == "" or text.startswith("bytes:"))))
        return self._tokens[token_id]

    def _choices(self, top: Any) -> list[TokenChoice]:
        """Top log-probabilities as servers send them: {text: logprob} (OpenAI, llama-cpp-python, vLLM)
        or [{token, logprob}, ...] (llama.cpp's llama-server)."""
        if isinstance(top, dict):
            pairs = list(top.items())
        elif isinstance(top, list):
            pairs = [(e.get("token"), e.get("logprob")) for e in top if isinstance(e, dict)]
        else:
            return []
        clean = [(str(t), float(lp)) for t, lp in pairs
                 if t is not None and isinstance(lp, (int, float)) and not isinstance(lp, bool) and not math.isnan(lp)]
        clean.sort(key=lambda pair: -pair[1])
        return [TokenChoice(self.token(t), math.exp(lp), lp, rank) for rank, (t, lp) in enumerate(clean, start=1)]

    def _cut(self, text: str) -> int:
        """Where to cut a text the server found too long: about the first quarter, at a line start."""
        cut = len(text) // 4
        newline = text.find("\n", cut)
        return newline + 1 if 0 <= newline < len(text) - 1 else max(1, cut)

    async def _fitting(self, text: str, body: Callable[[str], dict]) -> tuple[dict, int]:
        """Ask with `text`; when the server says it exceeds the context, cut from the left and ask again."""
        offset = 0
        for _ in range(8):
            try:
                return await self._completion(body(text[offset:])), offset
            except BackendError as exc:
                if exc.kind != "request" or not CONTEXT_ERROR.search(str(exc)) or len(text) - offset < 2:
                    raise
                offset += self._cut(text[offset:])
        raise BackendError("request", f"the inference server at {self.base_url} refused every shortened text")

    # -- next tokens ------------------------------------------------------------------------------

    def next_tokens(self, text: str, n: int = 10, *, document: str = "", should_stop: StopCheck | None = None) -> NextTokens:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        return self._call(lambda: self._next_tokens(text, n), should_stop, NextTokens([], 0, False))

    async def _top_logprobs(self, text: str, n: int, extra: dict) -> tuple[dict, int, int]:
        """A completion asking for n top logprobs, lowered to the server's cap when it refuses n.

        The cap is the limit the refusal states (`stated_limit`); a refusal about logprobs that states
        none is retried once at OpenAI's 5, and that guess is kept only if the server then answers."""
        asked, guessed, before = n, False, self.top_n_cap
        while True:
            k = min(n, self.top_n_cap) if self.top_n_cap else n
            try:
                choice, offset = await self._fitting(text, lambda t: {"prompt": t, "logprobs": k, **extra})
            except BackendError as exc:
                if exc.kind != "request" or "logprob" not in f"{exc.body} {exc}".lower():
                    raise
                stated = stated_limit(exc.body or str(exc))
                if stated is not None and 0 < stated < k:
                    self.top_n_cap, asked = stated, k
                elif stated is None and not guessed and k > DEFAULT_CAP:
                    self.top_n_cap, asked, guessed = DEFAULT_CAP, k, True
                else:
                    if guessed:
                        self.top_n_cap = before  # the guess did not help: the refusal was about something else
                    raise
                continue
            if self.top_n_cap != before:
                self._tell_once("cap", "info", f"the inference server at {self.base_url} returns at most "
                                f"{self.top_n_cap} next tokens per request: the completion menu and hover show at "
                                f"most {self.top_n_cap} (asked for {asked}).")
            return choice, offset, k

    async def _next_distribution(self, text: str, n: int) -> tuple[Any, int]:
        """The top-n next tokens after `text` as the server sent them (for `_choices`), and the offset
        where the text the server saw starts."""
        choice, offset, _ = await self._top_logprobs(text, n, {"max_tokens": 1, "temperature": 0})
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict):
            raise BackendError("malformed", f"the inference server at {self.base_url} sent no logprobs "
                               f"with its completion: {str(choice)[:120]!r}")
        if isinstance(logprobs.get("content"), list):  # llama-server: chat-style entries
            first = logprobs["content"][0] if logprobs["content"] else {}
            return (first.get("top_logprobs") if isinstance(first, dict) else None), offset
        tops = logprobs.get("top_logprobs") or [None]
        return tops[0], offset

    async def _next_tokens(self, text: str, n: int) -> NextTokens:
        top, offset = await self._next_distribution(text, n)
        return NextTokens(self._choices(top)[:n], 0, offset > 0)

    # -- per-token scores (hover) -------------------------------------------------------------------

    def token_scores(self, text: str, *, document: str = "", should_stop: StopCheck | None = None) -> TextScores:
        """Every token's log-probability from the server's echo of the prompt. Each call costs a full
        pass over `text` on the server (no KV cache here), so the last answer per document is kept."""
        if not text or self.echo_supported is False:
            return TextScores([], False, 0)
        kept = self._scored.get(document)
        if kept is not None and kept[0] == text:
            return kept[1]
        result = self._call(lambda: self._token_scores(text), should_stop, None)
        if result is None:
            return TextScores([], False, 0)
        self._scored[document] = (text, result)
        while len(self._scored) > self.cached_documents:
            self._scored.pop(next(iter(self._scored)))
        return result

    async def _token_scores(self, text: str) -> TextScores:
        choice, offset, k = await self._top_logprobs(
            text, max(10, self.alternatives), {"echo": True, "max_tokens": 1, "temperature": 0})
        window = text[offset:]
        generated = str(choice.get("text", ""))
        logprobs = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else {}
        tokens = logprobs.get("tokens")
        token_logprobs = logprobs.get("token_logprobs")
        echoed = (isinstance(tokens, list) and isinstance(token_logprobs, list) and len(tokens) > 1
                  and generated.startswith(window[:16]) and len("".join(map(str, tokens))) >= len(window) // 2)
        if not echoed:
            self.echo_supported = False
            self._tell_once("echo", "warning", f"the inference server at {self.base_url} ({self.server_kind}) does "
                            f"not return log-probabilities of the prompt (`echo` with `logprobs`): hover shows "
                            f"nothing with this server; completion and generate work.")
            return TextScores([], False, 0)
        self.echo_supported = True
        tokens = [str(t) for t in tokens]
        tops = list(logprobs.get("top_logprobs") or [])
        tops += [None] * (len(tokens) - len(tops))
        joined = "".join(tokens)
        shifted = self._echo_is_shifted(window, joined, generated)
        offsets = logprobs.get("text_offset")
        if joined.startswith(window) or not isinstance(offsets, list):
            offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]  # exact when pieces are whole
        starts = [o if isinstance(o, int) else None for o in offsets[:len(tokens)]]
        starts += [None] * (len(tokens) - len(starts))
        if shifted and len(tokens) > 1 and tops[0] is None and starts[1] and starts[1] < len(window):
            # The distribution that predicts token 1 is the one after token 0, which the echo blanks
            # (OpenAI's null for the first entry): ask for it, the next tokens after token 0 alone.
            tops[0] = await self._after_first_token(window[:starts[1]], k)
        scores: list[TokenScore] = []
        for index, piece in enumerate(tokens):
            start = starts[index]
            if start is None or start >= len(window):
                break  # the generated token, and anything after the prompt
            end = min(start + len(piece), len(window))
            token = self.token(piece)
            # Every entry may hold one token beyond the top k (llama-cpp-python and vLLM add the echoed
            # token's own): a true value of that distribution, but not one of its top k.
            distribution = (tops[index - 1] if index > 0 else None) if shifted else tops[index]
            listed = self._choices(distribution)
            alternatives = listed[:k]
            if shifted:
                lp = next((c.logprob for c in listed if c.text == piece), None)
            else:
                lp = token_logprobs[index] if index < len(token_logprobs) else None
            if not isinstance(lp, (int, float)) or isinstance(lp, bool) or math.isnan(lp):
                lp = None
            if lp is None:
                # The first token (nothing before it), or one below every alternative the server listed.
                scores.append(TokenScore(len(scores), token, start + offset, end + offset, None, None, None,
                                         alternatives if index > 0 else []))
                continue
            better = [a for a in alternatives if a.logprob > lp]
            # The rank is exact only when the token is among the alternatives (or beats them all).
            known = any(a.id == token.id for a in alternatives) or len(better) < len(alternatives)
            rank = len(better) + 1 if known else None
            scores.append(TokenScore(len(scores), token, start + offset, end + offset, math.exp(lp), float(lp), rank,
                                     alternatives))
        return TextScores(scores, offset > 0, offset)

    def _echo_is_shifted(self, window: str, joined: str, generated: str) -> bool:
        """Whether echo entry i holds the distribution AFTER token i (the one predicting token i + 1).

        llama-cpp-python (0.3.x) pairs token i with the logits at position i of what it evaluated: with
        a BOS token first, those predict token i (as OpenAI's format means) and the echo goes on to the
        generated token; without BOS they come after token i, and the echo stops at the prompt's end,
        as the generated token was never evaluated. So an echo that covers the prompt only, while a
        token was generated, is shifted; one that covers the generated token is not. When nothing was
        generated (end of sequence), what the last echo showed holds."""
        if len(generated) > len(window):
            self._echo_shifted = len(joined) <= len(window)
        if self._echo_shifted is None:
            return self.server_kind == "llama-cpp-python"
        return self._echo_shifted

    async def _after_first_token(self, prefix: str, k: int) -> Any:
        """The next-token distribution after `prefix` (one token: the scored text's first), kept per prefix."""
        key = (prefix, k)
        if key not in self._after_first:
            try:
                self._after_first[key] = (await self._next_distribution(prefix, k))[0]
            except BackendError:
                return None  # token 1 goes without: the echo's scores of the others still stand
            while len(self._after_first) > max(8, self.cached_documents):
                self._after_first.pop(next(iter(self._after_first)))
        return self._after_first[key]

    # -- greedy -----------------------------------------------------------------------------------

    def greedy(self, text: str, *, max_new_tokens: int | None = None, max_length: int | None = None,
               document: str = "", should_stop: StopCheck | None = None) -> Iterator[GreedyStep]:
        """Greedy continuation streamed from the server (`temperature: 0`, SSE), one step per chunk.

        Without a tokenizer here, `max_length` (prompt plus new tokens) counts new tokens only.
        Ends with an EOS step (id in `eos_ids`, empty text) when the server stopped on end-of-sequence.
        """
        for name, value in (("max_new_tokens", max_new_tokens), ("max_length", max_length)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        limit = max_new_tokens if max_new_tokens is not None else (max_length if max_length is not None else 100)
        if limit == 0:
            return
        events: queue.Queue = queue.Queue()
        loop = self._ensure_loop()
        task = asyncio.run_coroutine_threadsafe(self._stream(text, limit, events), loop)
        try:
            while True:
                try:
                    kind, value = events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if should_stop is not None and should_stop():
                        raise Cancelled() from None
                    continue
                if kind == "step":
                    yield value
                elif kind == "error":
                    self._failed(value)
                    return
                else:  # done
                    self._succeeded()
                    return
                if should_stop is not None and should_stop():
                    raise Cancelled()
        finally:
            task.cancel()  # closes the stream when the caller stops early, is cancelled, or is done

    async def _stream(self, text: str, limit: int, events: queue.Queue) -> None:
        try:
            async for step in self._stream_steps(text, limit):
                events.put(("step", step))
            events.put(("done", None))
        except BackendError as exc:
            events.put(("error", exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is a failed request, not a crash
            events.put(("error", BackendError("malformed", f"the inference server at {self.base_url}: "
                                              f"{type(exc).__name__}: {exc}")))

    async def _stream_steps(self, text: str, limit: int) -> AsyncIterator[GreedyStep]:
        if self.model_name is None:
            await self._probe()
        body = {"model": self.model_name, **self._extra(), "prompt": text, "max_tokens": limit, "temperature": 0,
                "stream": True}
        tries = 1 if self.down in ("unreachable", "server") else 1 + self.retries
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(self.backoff * (2 ** (attempt - 1)))
            produced = 0
            try:
                async with self._client.stream("POST", "/completions", json=body) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        error = self._http_error(response)
                        if response.status_code < 500 or attempt == tries - 1:
                            raise error
                        continue
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            return
                        try:
                            chunk = json.loads(data)
                            choice = chunk["choices"][0]
                        except (ValueError, KeyError, IndexError, TypeError) as exc:
                            raise BackendError("malformed", f"the inference server at {self.base_url} sent a "
                                               f"malformed stream event: {data[:120]!r}") from exc
                        piece = choice.get("text") or ""
                        if piece or not choice.get("finish_reason"):
                            produced += 1
                            yield GreedyStep(self.token(piece), piece)
                        if choice.get("finish_reason") == "stop":
                            yield GreedyStep(self.eos_token, "")
                        if choice.get("finish_reason"):
                            return
                    return
            except httpx.TransportError as exc:
                if produced or attempt == tries - 1:  # a stream cut half-way is not retried: text would repeat
                    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable"
                    raise BackendError(kind, f"the inference server at {self.base_url} "
                                       f"{'stopped answering mid-stream' if produced else 'cannot be reached'} "
                                       f"({type(exc).__name__}: {exc or 'connection failed'})") from exc

    def generate_text(self, text: str, **options: Any) -> str:
        return "".join(step.text for step in self.greedy(text, **options))
