"""HTTP to an inference server: one `httpx.AsyncClient` (connection reuse, timeouts) on a private
event loop in a daemon thread, requests with retries, and errors sorted into kinds.

The caller's thread waits on the loop and polls `should_stop()`: when it fires the request's task is
cancelled, which closes the connection and with it a streaming response. Connection errors and 5xx
are retried with exponential backoff (fewer tries while the server is known to be down, so
keystrokes stay quick); a 4xx is an answer, not a failure of the connection, and is never retried.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import os
import re
import threading
import urllib.parse
from typing import Any, Callable

import httpx

from ..types import Cancelled
from .health import Health

StopCheck = Callable[[], bool]
POLL_SECONDS = 0.02

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


class BackendError(Exception):
    """A request that failed for good: `kind` groups failures for the one-message-per-kind rule."""

    def __init__(self, kind: str, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.kind, self.status, self.body = kind, status, body


def stated_limit(message: str) -> int | None:
    """The top-logprobs limit a server's refusal states, or None when it states none."""
    for phrase in LIMIT_PHRASES:
        match = phrase.search(message)
        if match:
            return int(match.group(1))
    return None


def private_channel(url: str) -> bool:
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


def base_url(endpoint: str) -> str:
    url = endpoint.strip().rstrip("/")
    if not re.match(r"^https?://", url):
        url = "http://" + url
    return url if url.endswith("/v1") else url + "/v1"


class Transport:
    """The connection to one server. `model_name()` names the model in a 404's message."""

    def __init__(self, url: str, health: Health, *, api_key_env: str = "", timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.1, model_name: Callable[[], str] = lambda: "auto",
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = url
        # Server-specific endpoints (vLLM's /tokenize, llama-server's /completion) live beside /v1.
        self.root_url = url[: -len("/v1")] if url.endswith("/v1") else url
        self.health = health
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.retries = max(0, retries)
        self.backoff = backoff
        self.model_name = model_name
        self._transport = transport
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client: httpx.AsyncClient | None = None
        self._lock = threading.Lock()
        self.key_withheld = False  # a key was set but not sent: plain http off this machine

    def ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="logitls-http", daemon=True).start()
                headers = {}
                key = os.environ.get(self.api_key_env) if self.api_key_env else None
                if key and not private_channel(self.base_url):
                    key, self.key_withheld = None, True
                    self.health.tell_once("plain-key", "warning", f"the API key in {self.api_key_env} is not sent "
                                          f"to {self.base_url}: plain http to another machine would show it to anyone "
                                          f"on the way. Use an https:// endpoint (or a tunnel to 127.0.0.1).")
                if key:
                    headers["Authorization"] = f"Bearer {key}"

                async def make() -> httpx.AsyncClient:
                    return httpx.AsyncClient(
                        base_url=self.base_url, headers=headers, transport=self._transport,
                        timeout=httpx.Timeout(self.timeout, connect=min(5.0, self.timeout)),
                        limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=60))

                self.client = asyncio.run_coroutine_threadsafe(make(), loop).result()
                self._loop = loop
            return self._loop

    def close(self) -> None:
        with self._lock:
            loop, client = self._loop, self.client
            self._loop = self.client = None
        if loop is None:
            return
        if client is not None:
            try:
                asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=2)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        loop.call_soon_threadsafe(loop.stop)

    def run(self, coro, should_stop: StopCheck | None) -> Any:
        """Run `coro` on the HTTP loop; cancel it (closing its connection) when should_stop() fires."""
        future = asyncio.run_coroutine_threadsafe(coro, self.ensure_loop())
        while True:
            try:
                return future.result(timeout=POLL_SECONDS)
            except concurrent.futures.TimeoutError:
                if should_stop is not None and should_stop():
                    future.cancel()
                    raise Cancelled() from None
            except concurrent.futures.CancelledError:
                raise Cancelled() from None

    def tries(self) -> int:
        return 1 if self.health.down in ("unreachable", "server") else 1 + self.retries

    async def send(self, method: str, path: str, body: dict | None = None, *, root: bool = False) -> Any:
        """One JSON request with retries on connection errors and 5xx; the parsed JSON answer.
        `root`: the path is beside /v1 (a server's own endpoints), not under it."""
        url = self.root_url + path if root else path
        last: BackendError | None = None
        for attempt in range(self.tries()):
            if attempt:
                await asyncio.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                response = await self.client.request(method, url, json=body)
            except httpx.TimeoutException as exc:
                last = BackendError("timeout", f"the inference server at {self.base_url} did not answer within "
                                    f"{self.timeout:g} s ({type(exc).__name__})")
                continue
            except httpx.TransportError as exc:
                last = BackendError("unreachable", f"cannot reach the inference server at {self.base_url} "
                                    f"({type(exc).__name__}: {exc or 'connection failed'})")
                continue
            if response.status_code >= 500:
                last = self.http_error(response)
                continue
            if response.status_code >= 400:
                raise self.http_error(response)
            try:
                return response.json()
            except ValueError as exc:
                raise BackendError("malformed", f"the inference server at {self.base_url} sent malformed JSON "
                                   f"for {path}: {response.text[:120]!r}") from exc
        assert last is not None
        raise last

    def http_error(self, response: httpx.Response) -> BackendError:
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
                                f"{self.model_name()!r} or no {response.request.url.path} (HTTP 404): "
                                f"{detail}", status, text)
        kind = "server" if status >= 500 else "request"
        return BackendError(kind, f"the inference server at {self.base_url} answered HTTP {status}: {detail}",
                            status, text)
