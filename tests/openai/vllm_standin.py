"""A stand-in for vLLM's OpenAI-compatible server: vLLM needs a GPU, these machines have none.

The request and response shapes follow vLLM's own source, vllm-project/vllm at the commits read
for this (its main branch, late 2026): `vllm/entrypoints/openai/completion/protocol.py` (002032ee:
`CompletionRequest`, `CompletionResponseChoice.prompt_logprobs` / `prompt_token_ids`, the
`check_logprobs` validator), `vllm/entrypoints/openai/completion/serving.py` (030ea52e: echo with
`max_tokens: 0` returns the prompt only; `_create_completion_logprobs` builds `tokens`,
`text_offset` and a top map of `logprobs + 1` entries led by the token itself), the processor's
`_validate_logprobs` ("Requested prompt logprobs of 21, which is greater than max allowed: 20",
a 400 through `VLLMValidationError`), `TokenizeResponse` (`count`, `max_model_len`, `tokens`) at
`POST /tokenize`, and `/v1/models` entries `owned_by: "vllm"` with `max_model_len`.

The numbers are real: a local model (the project's Engine's model and tokenizer) scores every
prompt in one forward pass, in fp32, and a prompt token's `rank` is its rank in the whole
vocabulary, counted as vLLM counts it (tokens with a log-probability >= its own).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import torch

from llama_server import free_port

VLLM_SOURCE = "vllm-project/vllm main (completion/protocol.py 002032ee, completion/serving.py 030ea52e)"


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class VLLMStandIn:
    """One server on 127.0.0.1; `requests` records every (path, body) it was sent."""

    def __init__(self, engine, *, max_model_len: int = 2048, max_logprobs: int = 20, name: str = "smol-vllm",
                 owned_by: str = "vllm", echo: bool = True) -> None:
        # owned_by / echo: the same server posing as one of no known kind that ignores `echo` (as
        # llama-server's /v1/completions does), for the tests of a backend that degrades.
        self.owned_by, self.echo = owned_by, echo
        self.engine, self.model, self.tokenizer = engine, engine.model, engine.tokenizer
        self.max_model_len, self.max_logprobs, self.name = max_model_len, max_logprobs, name
        self.requests: list[tuple[str, Any]] = []
        self.lock = threading.Lock()  # one forward pass at a time: the Engine is not thread-safe
        self.port = free_port()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def scoring_requests(self) -> list[dict]:
        return [b for p, b in self.requests if p == "/v1/completions" and b.get("prompt_logprobs") is not None]

    def start(self) -> "VLLMStandIn":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet: pytest shows failures, not access logs
                pass

            def reply(self, status: int, payload: Any, content_type: str = "application/json") -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                standin.requests.append((self.path, None))
                if self.path == "/v1/models":
                    self.reply(200, standin.models())
                else:
                    self.reply(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                standin.requests.append((self.path, body))
                try:
                    if self.path == "/tokenize":
                        self.reply(200, standin.tokenize(body))
                    elif self.path == "/v1/completions":
                        answer = standin.completions(body)
                        if isinstance(answer, str):
                            self.reply(200, answer, "text/event-stream")
                        else:
                            self.reply(200, answer)
                    else:
                        self.reply(404, {"detail": "Not Found"})
                except BadRequest as exc:
                    # vLLM's ErrorResponse: {"error": {"message", "type", "param", "code"}}
                    self.reply(400, {"error": {"message": str(exc), "type": "BadRequestError", "param": exc.param,
                                               "code": 400}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, name="vllm-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    # -- endpoints ----------------------------------------------------------------------------------

    def models(self) -> dict:
        return {"object": "list", "data": [{
            "id": self.name, "object": "model", "created": int(time.time()), "owned_by": self.owned_by, "root": self.name,
            "parent": None, "max_model_len": self.max_model_len, "permission": []}]}

    def _ids(self, prompt: Any, add_special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return list(prompt)  # token ids go in as they are: no BOS added
        if not isinstance(prompt, str) or not prompt:
            raise BadRequest("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
        return list(self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])

    def tokenize(self, body: dict) -> dict:
        ids = self._ids(body.get("prompt"), body.get("add_special_tokens", True))
        return {"count": len(ids), "max_model_len": self.max_model_len, "tokens": ids, "token_strs": None}

    def _decode(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def completions(self, body: dict) -> dict | str:
        prompt_logprobs, logprobs = body.get("prompt_logprobs"), body.get("logprobs")
        echo, max_tokens = bool(body.get("echo")) and self.echo, body.get("max_tokens", 16)
        if max_tokens is None:
            max_tokens = 16
        if prompt_logprobs is not None and body.get("stream") and (prompt_logprobs > 0 or prompt_logprobs == -1):
            raise BadRequest("`prompt_logprobs` are not available when `stream=True`.", "prompt_logprobs")
        vocab = self.engine.vocab_size
        for field, what in (("logprobs", "sample"), ("prompt_logprobs", "prompt")):
            value = body.get(field)
            if value == -1:
                value = vocab
            if value and value > self.max_logprobs:
                raise BadRequest(f"Requested {what} logprobs of {value}, which is greater than max allowed: "
                                 f"{self.max_logprobs} (parameter={field}, value={value})", field)
        ids = self._ids(body.get("prompt"), body.get("add_special_tokens", True))
        # max_tokens 0 with echo: vLLM samples one token and drops it, so the prompt leaves one position.
        need = len(ids) + max(1, max_tokens)
        if need > self.max_model_len:
            raise BadRequest(f"This model's maximum context length is {self.max_model_len} tokens. However, you "
                             f"requested {need} tokens ({len(ids)} in the messages, {max(1, max_tokens)} in the "
                             f"completion). Please reduce the length of the messages or completion.", "max_tokens")
        if body.get("stream"):
            return self._stream(ids, max_tokens)
        with self.lock, torch.no_grad():
            scored = torch.log_softmax(self.model.forward(ids, self.model.new_cache(), 0), dim=-1)
        entries = self._prompt_logprobs(ids, scored, prompt_logprobs) if prompt_logprobs is not None else None
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "stop_reason": None,
                                  "prompt_logprobs": entries, "prompt_token_ids": ids if body.get("return_token_ids")
                                  else None, "token_ids": None}
        prompt_text = "" if body.get("return_token_ids") else self.tokenizer.decode(ids)
        if echo and max_tokens == 0:
            choice["text"] = prompt_text
            out_ids, out_tops = ids, (entries or self._prompt_logprobs(ids, scored, 0))
        else:
            generated = [int(scored[-1].argmax())]  # temperature 0; the stand-in generates one token at most
            top = self._top(scored[-1], generated[0], logprobs or 0)
            choice["text"] = (prompt_text if echo else "") + self._decode(generated[0])
            out_ids = (ids if echo else []) + generated
            out_tops = ((entries or self._prompt_logprobs(ids, scored, 0)) if echo else []) + [top]
        if logprobs is not None:
            choice["logprobs"] = self._openai_logprobs(out_ids, out_tops, logprobs)
        else:
            choice["logprobs"] = None
        return {"id": f"cmpl-{len(self.requests)}", "object": "text_completion", "created": int(time.time()),
                "model": self.name, "choices": [choice],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": 0 if max_tokens == 0 else 1,
                          "total_tokens": len(ids) + (0 if max_tokens == 0 else 1)}}

    def _top(self, distribution: torch.Tensor, token_id: int, k: int) -> dict[str, dict]:
        """vLLM's map for one position: the token itself (its vocabulary rank), then the top k."""
        own = float(distribution[token_id])
        entries = {str(token_id): {"logprob": max(own, -9999.0), "rank": int((distribution >= own).sum()),
                                   "decoded_token": self._decode(token_id)}}
        if k > 0:
            values, indices = torch.topk(distribution, k)
            for rank, (value, index) in enumerate(zip(values.tolist(), indices.tolist()), start=1):
                entries[str(index)] = {"logprob": max(value, -9999.0), "rank": rank, "decoded_token": self._decode(index)}
        return entries

    def _prompt_logprobs(self, ids: list[int], scored: torch.Tensor, k: int) -> list[dict | None]:
        return [None] + [self._top(scored[j - 1], ids[j], k) for j in range(1, len(ids))]

    def _openai_logprobs(self, ids: list[int], tops: list[dict | None], k: int) -> dict:
        tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
        for token_id, top in zip(ids, tops):
            offsets.append(offsets[-1] + len(tokens[-1]) if tokens else 0)
            if top is None:
                tokens.append(self._decode(token_id))
                token_logprobs.append(None)
                top_logprobs.append(None)
                continue
            tokens.append(top[str(token_id)]["decoded_token"])
            token_logprobs.append(top[str(token_id)]["logprob"])
            top_logprobs.append({e["decoded_token"]: e["logprob"] for i, e in enumerate(top.values()) if k >= i})
        return {"text_offset": offsets, "token_logprobs": token_logprobs, "tokens": tokens,
                "top_logprobs": top_logprobs}

    def _stream(self, ids: list[int], max_tokens: int) -> str:
        text = self.tokenizer.decode(ids)
        with self.lock:
            steps = list(self.engine.greedy(text, max_new_tokens=max_tokens))
        chunks = []
        for step in steps:
            finish = "stop" if step.token.id in self.engine.eos_ids else None
            chunks.append({"choices": [{"index": 0, "text": "" if finish else step.text, "finish_reason": finish}]})
        if not chunks or chunks[-1]["choices"][0]["finish_reason"] is None:
            chunks.append({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]})
        return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
