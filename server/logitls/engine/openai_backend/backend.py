"""The engine adapter: `OpenAIBackend` answers the calls of the `Backend` protocol (engine/types.py)
from an OpenAI-compatible inference server, so the language server and the CLI need not know which
backend they talk to. What differs between servers lives in one dialect per server (dialects/).

What every server shares:
- next tokens: `max_tokens: 1, temperature: 0, logprobs: k`; the top-k of the first position.
  A server that caps k (vLLM's `--max-logprobs`, OpenAI's 5) answers 400; the cap is the limit the
  message states (`stated_limit`: known phrasings only, never any number in it, such as the URL's),
  else 5 tried once; kept once the server answers, and stated once through `notify`. The same rule
  holds for vLLM's `prompt_logprobs`;
- a text the server finds too long is cut from the left (about a quarter, at a line start);
- greedy: `temperature: 0, stream: true` (server-sent events), one step per streamed chunk;
- failures never raise to the caller: the result is empty, and `notify` says so once per kind of
  failure (health.py). A server that lacks a feature is a fact said once, never a failure.

This package knows nothing of LSP and does not import torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator, TypeVar

import httpx

from ..types import Capabilities, GreedyStep, NextTokens, TextScores, Token, TokenChoice, TokenScore
from .dialects import Dialect, detect
from .dialects.openai import OpenAICompatible
from . import stream
from .health import Health, Notify
from .transport import BackendError, StopCheck, Transport, base_url, stated_limit

T = TypeVar("T")
EOS_ID = -1  # the synthetic token a greedy stream ends with when the server stopped on end-of-sequence
DEFAULT_CAP = 5  # top logprobs when a server refuses more and does not say its maximum (OpenAI's limit)
SPECIAL = re.compile(r"^(<\|[^|]*\|>|<s>|</s>|<unk>|<pad>|\[(BOS|EOS|PAD|UNK)\])$")
CONTEXT_ERROR = re.compile(r"context|too long|exceed|maximum.*length", re.IGNORECASE)
# Where a log-probability of -Infinity (p = 0) is kept: fp32's smallest probability, 2**-149, the least a
# local model reports; finite, so JSON can carry it and no perplexity overflows. Its p is shown as 0.
LOGPROB_FLOOR = math.log(2.0 ** -149)
ROUNDING = 1e-4  # a logprob this little above 0 is a server's rounding of 0


@dataclass(frozen=True)
class RemoteModel:
    """What `Engine.loaded` says for a local model, for display (`lifecycle` logs these); where a local
    model names its dtype, a server names its kind."""

    name: str
    source: str  # the endpoint
    device: str  # "remote"
    server_kind: str  # as detected: "llama-cpp-python", "llama.cpp", "vllm", "openai-compatible"
    model: Any = None
    tokenizer: Any = None
    weights: str | None = None  # the server's own; "exact" or "packed" name only local weights
    kernel: str = ""
    note: str = ""


class OpenAIBackend:
    """The Backend protocol over an OpenAI-compatible server. Not thread-safe, like Engine."""

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
        self.base_url = base_url(endpoint)
        self.requested_model = model or "auto"
        self.model_name: str | None = None if self.requested_model == "auto" else self.requested_model
        self.health = Health(notify, self.base_url)
        self.transport = Transport(self.base_url, self.health, api_key_env=api_key_env, timeout=timeout,
                                   retries=retries, backoff=backoff, transport=transport,
                                   model_name=lambda: self.model_name or self.requested_model)
        self.dialect: Dialect = OpenAICompatible(self)  # until /v1/models says which server this is
        self._probed = False
        self._ids: dict[str, int] = {}
        self._tokens: list[Token] = []
        # Unknown until the server says (llama.cpp's meta.n_vocab); large so that callers' min(n, vocab) holds.
        self.vocab_size = 1 << 30
        self.vocab_size_known = False
        self.model_context = 0  # unknown: the server cuts or refuses; we cut from the left on refusal
        self.top_n_cap: int | None = None
        self._scored: dict[tuple[str, str], tuple[str, TextScores]] = {}  # (document, what) -> (text, scores)
        self.eos_ids = {EOS_ID}
        self.eos_token = Token(EOS_ID, "", special=True)
        self.configure(max_context_tokens=max_context_tokens, alternatives=alternatives,
                       cached_documents=cached_documents)
        self.loaded = RemoteModel(self.model_name or "auto", self.base_url, "remote", self.server_kind)

    # -- what this backend is ---------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self.dialect.capabilities  # a dialect may learn it cannot score (a refused echo)

    @property
    def server_kind(self) -> str:
        return self.dialect.name

    @property
    def down(self) -> str | None:
        return self.health.down

    # -- set-up -----------------------------------------------------------------------------

    @classmethod
    def connect(cls, endpoint: str, **options: Any) -> "OpenAIBackend":
        """A backend with the server probed once (model name, kind, vocabulary). A server that is
        down is reported through `notify` and probed again on the next request: never raises."""
        backend = cls(endpoint, **options)
        try:
            backend.transport.run(backend._probe(), None)
        except BackendError as exc:
            backend.report_failure(exc)
        return backend

    def configure(self, *, max_context_tokens: int, alternatives: int, cached_documents: int, **_local_only) -> None:
        self.max_context_tokens = max_context_tokens
        self.context_window = max_context_tokens or self.model_context or 0
        self.alternatives = alternatives
        self.cached_documents = cached_documents  # the server keeps its own caches

    def forget(self, document: str) -> None:
        """Only the last scores per document are kept: the server's prompt cache does the rest."""
        for key in [key for key in self._scored if key[0] == document]:
            del self._scored[key]

    def cached_documents_keys(self) -> list[str]:
        return list(dict.fromkeys(key[0] for key in self._scored))

    def forget_all(self) -> None:
        """Called before a reload: close the connections (they reopen if this backend is used again)."""
        self._scored.clear()
        self.dialect.forget_all()
        self.close()

    def close(self) -> None:
        self.transport.close()

    async def _probe(self) -> None:
        """Which model and which kind of server: GET /v1/models."""
        answer = await self.transport.send("GET", "/models")
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
        kind = detect(entry)
        if not isinstance(self.dialect, kind):
            self.dialect = kind(self)  # detected once: what a dialect learns later stays with it
        meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
        if isinstance(meta.get("n_vocab"), int):
            self.vocab_size, self.vocab_size_known = meta["n_vocab"], True
        context = entry.get("max_model_len") or meta.get("n_ctx_train")
        if isinstance(context, int) and context > 0:
            self.model_context = context
            self.context_window = self.max_context_tokens or context
        self.loaded = RemoteModel(self.model_name or "auto", self.base_url, "remote", self.server_kind)
        self._probed = True

    # -- requests every dialect uses ---------------------------------------------------------------

    async def completion(self, body: dict) -> dict:
        if not self._probed:  # down when connecting: which server this is is still to be learnt
            await self._probe()
        answer = await self.transport.send("POST", "/completions",
                                           {"model": self.model_name, **self.dialect.request_extra(), **body})
        try:
            choice = answer["choices"][0]
            if not isinstance(choice, dict):
                raise TypeError
        except (KeyError, IndexError, TypeError) as exc:
            raise BackendError("malformed", f"the inference server at {self.base_url} sent a completion without "
                               f"choices: {str(answer)[:120]!r}") from exc
        return choice

    def report_failure(self, exc: BackendError) -> None:
        self.health.failed(exc, exc.kind)

    def report_success(self) -> None:
        self.health.succeeded(self.model_name)

    def _call(self, make, should_stop: StopCheck | None, empty: Any) -> Any:
        try:
            try:
                result = self.transport.run(make(), should_stop)
            except (KeyError, IndexError, TypeError, ValueError, OverflowError, AttributeError) as exc:
                # an answer of a shape no dialect check foresaw: a malformed answer, said once, not a traceback
                raise BackendError("malformed", f"the inference server at {self.base_url} sent an answer that "
                                   f"could not be read ({type(exc).__name__}: {str(exc)[:120]})") from exc
        except BackendError as exc:
            self.report_failure(exc)
            return empty
        self.report_success()
        return result

    # -- numbers: checked where they enter ------------------------------------------------------

    def logprob(self, value: Any) -> float | None:
        """A log-probability as the server sent it, checked: a finite number <= 0 (a hair above 0 is
        rounding: 0); -Infinity is p = 0, kept as LOGPROB_FLOOR. None (absent: the first token) is None;
        anything else (NaN, +Infinity, 1000, a string) is None too, and said once."""
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lp = float(value)
            if lp == -math.inf:
                return LOGPROB_FLOOR
            if math.isfinite(lp) and lp <= ROUNDING:
                return max(LOGPROB_FLOOR, min(lp, 0.0))
        self.health.tell_once("bad-logprob", "warning",
                              f"the inference server at {self.base_url} sent a log-probability that is not one "
                              f"({str(value)[:40]}; a log-probability is a number <= 0): such entries are left out")
        return None

    def logprob_of_prob(self, value: Any) -> float | None:
        """A probability (older llama.cpp servers' `prob`), checked to lie in [0, 1], as a log-probability."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0 + ROUNDING:
            return self.logprob(math.log(value) if value > 0 else -math.inf)
        return self.logprob(math.nan if value is not None else None)

    @staticmethod
    def prob(lp: float) -> float:
        return 0.0 if lp <= LOGPROB_FLOOR else math.exp(lp)

    def choice(self, text: str, lp: float, rank: int) -> TokenChoice:
        return TokenChoice(self.token(text), self.prob(lp), lp, rank)

    def top_list(self, value: Any, where: str) -> list:
        """A list the server sends per position (`top_logprobs`, `token_logprobs`), or a malformed answer."""
        if value is None:
            return []
        if not isinstance(value, list):
            raise BackendError("malformed", f"the inference server at {self.base_url} sent {where} as "
                               f"{type(value).__name__}, not a list: {str(value)[:80]!r}")
        return value

    # -- tokens ---------------------------------------------------------------------------------

    def token(self, text: str) -> Token:
        """Servers name tokens by their text: the same text always gets the same (synthetic) id."""
        token_id = self._ids.get(text)
        if token_id is None:
            token_id = self._ids[text] = len(self._tokens)
            special = self.is_special(text)
            self._tokens.append(Token(token_id, text, special=special,
                                      partial=not special and ("\ufffd" in text or text == "" or text.startswith("bytes:"))))
        return self._tokens[token_id]

    @staticmethod
    def is_special(text: str) -> bool:
        return bool(SPECIAL.match(text))

    def choices(self, top: Any) -> list[TokenChoice]:
        """Top log-probabilities as servers send them: {text: logprob} (OpenAI, llama-cpp-python, vLLM)
        or [{token, logprob}, ...] (llama.cpp's llama-server)."""
        if isinstance(top, dict):
            pairs = list(top.items())
        elif isinstance(top, list):
            pairs = [(e.get("token"), e.get("logprob")) for e in top if isinstance(e, dict)]
        else:
            return []
        clean = [(str(t), lp) for t, lp in ((t, self.logprob(v)) for t, v in pairs) if t is not None and lp is not None]
        clean.sort(key=lambda pair: -pair[1])
        return [self.choice(t, lp, rank) for rank, (t, lp) in enumerate(clean, start=1)]

    def _cut(self, text: str) -> int:
        """Where to cut a text the server found too long: about the first quarter, at a line start."""
        cut = len(text) // 4
        newline = text.find("\n", cut)
        return newline + 1 if 0 <= newline < len(text) - 1 else max(1, cut)

    async def fitting(self, text: str, ask: Callable[[str], Awaitable[T]]) -> tuple[T, int]:
        """ask(text); when the server says it exceeds the context, cut from the left and ask again.
        The answer and the offset where the text the server saw starts."""
        offset = 0
        for _ in range(8):
            try:
                return await ask(text[offset:]), offset
            except BackendError as exc:
                if exc.kind != "request" or not CONTEXT_ERROR.search(str(exc)) or len(text) - offset < 2:
                    raise
                offset += self._cut(text[offset:])
        raise BackendError("request", f"the inference server at {self.base_url} refused every shortened text")

    async def capped(self, n: int, ask: Callable[[int], Awaitable[T]]) -> tuple[T, int]:
        """ask(k) for n top log-probabilities, k lowered to the server's cap when it refuses n.

        The cap is the limit the refusal states (`stated_limit`); a refusal about logprobs that states
        none is retried once at OpenAI's 5, and that guess is kept only if the server then answers."""
        asked, guessed, before = n, False, self.top_n_cap
        while True:
            k = min(n, self.top_n_cap) if self.top_n_cap else n
            try:
                answer = await ask(k)
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
                self.health.tell_once("cap", "info", f"the inference server at {self.base_url} returns at most "
                                      f"{self.top_n_cap} log-probabilities per position: the completion menu and "
                                      f"hover show at most {self.top_n_cap} (asked for {asked}).")
            return answer, k

    async def top_logprobs(self, text: str, n: int, extra: dict) -> tuple[dict, int, int]:
        """A completion asking for n top logprobs (capped), the text cut to fit: (choice, offset, k)."""
        (choice, offset), k = await self.capped(n, lambda k: self.fitting(
            text, lambda t: self.completion({"prompt": t, "logprobs": k, **extra})))
        return choice, offset, k

    # -- next tokens ------------------------------------------------------------------------------

    def next_tokens(self, text: str, n: int = 10, *, document: str = "", should_stop: StopCheck | None = None) -> NextTokens:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        return self._call(lambda: self._next_tokens(text, n), should_stop, NextTokens([], 0, False))

    async def next_distribution(self, text: str, n: int) -> tuple[Any, int]:
        """The top-n next tokens after `text` as the server sent them (for `choices`), and the offset
        where the text the server saw starts."""
        choice, offset, _ = await self.top_logprobs(text, n, {"max_tokens": 1, "temperature": 0})
        logprobs = choice.get("logprobs")
        if not isinstance(logprobs, dict):
            raise BackendError("malformed", f"the inference server at {self.base_url} sent no logprobs "
                               f"with its completion: {str(choice)[:120]!r}")
        if isinstance(logprobs.get("content"), list):  # llama-server: chat-style entries
            first = logprobs["content"][0] if logprobs["content"] else {}
            return (first.get("top_logprobs") if isinstance(first, dict) else None), offset
        tops = self.top_list(logprobs.get("top_logprobs"), "top_logprobs") or [None]
        return tops[0], offset

    async def _next_tokens(self, text: str, n: int) -> NextTokens:
        top, offset = await self.next_distribution(text, n)
        return NextTokens(self.choices(top)[:n], 0, offset > 0)

    # -- scores: hover and the lens, as the dialect can give them -----------------------------------

    def _kept(self, document: str, what: str, text: str, make: Callable[[], Awaitable[TextScores]],
              should_stop: StopCheck | None) -> TextScores:
        """Scores kept per document and kind: each costs a full pass over the text on the server."""
        kept = self._scored.get((document, what))
        if kept is not None and kept[0] == text:
            return kept[1]
        result = self._call(make, should_stop, None)
        if result is None:
            return TextScores([], False, 0)
        self._scored[(document, what)] = (text, result)
        while len(self._scored) > 2 * max(1, self.cached_documents):
            self._scored.pop(next(iter(self._scored)))
        return result

    async def kept_token_scores(self, text: str, document: str) -> TextScores:
        """For a dialect inside a request: the document's kept scores of `text`, else scored now."""
        kept = self._scored.get((document, "text"))
        if kept is not None and kept[0] == text:
            return kept[1]
        result = await self.dialect.token_scores(text)
        self._scored[(document, "text")] = (text, result)
        return result

    def token_scores(self, text: str, *, document: str = "", should_stop: StopCheck | None = None) -> TextScores:
        """Every token of `text` scored, as the dialect can (echo, prompt_logprobs, one request per
        position); empty where the server gives no scores."""
        if not text or not self.dialect.scores_text:
            return TextScores([], False, 0)
        return self._kept(document, "text", text, lambda: self.dialect.token_scores(text), should_stop)

    def token_score_at(self, text: str, offset: int, *, document: str = "",
                       should_stop: StopCheck | None = None) -> TokenScore | None:
        """The scored token holding `offset` (hover), asking the server for as little as it can."""
        if not text or not self.dialect.scores_text:
            return None
        return self._call(lambda: self.dialect.token_score_at(text, offset, document), should_stop, None)

    def document_scores(self, text: str, *, stride: int | None = None, document: str = "",
                        should_stop: StopCheck | None = None, chunk_size: int = 0) -> TextScores:
        """Every token of a document (the lens), where `capabilities.document_scores`: one pass per
        document version, in windows where the document is longer than the model's context."""
        if not self.capabilities.document_scores:
            raise NotImplementedError(f"{self.server_kind} servers do not score whole documents")
        if not text:
            return TextScores([], False, 0)
        return self._kept(document, "document", text, lambda: self.dialect.document_scores(text, stride), should_stop)

    def token_count(self, text: str) -> int:
        """Tokens in `text` as the server counts them; a rough estimate (4 characters a token) where
        the server cannot say."""
        counted = self._call(lambda: self.dialect.token_count(text), None, None) if text else 0
        return counted if isinstance(counted, int) else -(-len(text) // 4)

    # -- greedy -----------------------------------------------------------------------------------

    def greedy(self, text: str, *, max_new_tokens: int | None = None, max_length: int | None = None,
               document: str = "", should_stop: StopCheck | None = None, sampling: Any = None) -> Iterator[GreedyStep]:
        """Greedy continuation streamed from the server (`temperature: 0`, SSE), one step per chunk.

        Without a tokenizer here, `max_length` (prompt plus new tokens) counts new tokens only.
        Ends with an EOS step (id in `eos_ids`, empty text) when the server stopped on end-of-sequence.
        With `sampling` (a SamplingParams), the server samples: its temperature, top_k, top_p, min_p and
        seed are sent where the server's dialect takes them (`sampling_body`); the server's own sampler
        chain (order, defaults such as llama.cpp's temperature last) decides, and the p after the
        samplers is never shown for a server (capabilities.sampled_distribution is false).
        """
        for name, value in (("max_new_tokens", max_new_tokens), ("max_length", max_length)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        limit = max_new_tokens if max_new_tokens is not None else (max_length if max_length is not None else 100)
        if limit == 0:
            return
        yield from stream.greedy(self, text, limit, should_stop, sampling)

    def sampling_body(self, sampling: Any) -> dict:
        """The request fields of a sampled generation (`temperature: 0` where greedy); a sampler this
        server's dialect (known once probed) does not take is left out and said once."""
        if sampling is None or sampling.greedy:
            return {"temperature": 0}
        wanted = {"temperature": sampling.temperature, "top_k": sampling.top_k or None,
                  "top_p": sampling.top_p if sampling.top_p < 1 else None,
                  "min_p": sampling.min_p or None, "seed": sampling.seed}
        body = {name: value for name, value in wanted.items()
                if value is not None and name in self.dialect.sampling_fields}
        dropped = [name for name, value in wanted.items() if value is not None and name not in body]
        if dropped:
            self.health.tell_once(f"sampling:{','.join(dropped)}", "warning",
                                  f"the inference server at {self.base_url} ({self.dialect.name}) takes no "
                                  f"{', '.join(dropped)}: sampled without {'it' if len(dropped) == 1 else 'them'}")
        return body

    def generate_text(self, text: str, **options: Any) -> str:
        return "".join(step.text for step in self.greedy(text, **options))
