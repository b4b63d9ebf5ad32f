"""A scripted OpenAI-compatible server on 127.0.0.1, posing as vLLM: word tokens, and whatever numbers
a test puts in its answers (NaN, -Infinity, 1000, a map where a list goes), written as Python's JSON
writes them (`NaN`, `-Infinity`), which is what a server built on Python sends."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llama_server import free_port

WORD = re.compile(r"\s*\S+|\s+")


class ScriptedServer:
    """`top`: the next-token top_logprobs entry (or, with `top_as_is`, the whole top_logprobs value);
    `own`: the log-probability each prompt token gets in prompt_logprobs (its rank 1, one alternative)."""

    def __init__(self) -> None:
        self.top: Any = {" Paris": -0.26, " the": -2.7}
        self.top_as_is = False
        self.own: Any = -1.0
        self.vocab: dict[str, int] = {}
        self.port = free_port()
        self.httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ids(self, prompt: Any) -> tuple[list[int], list[str]]:
        if isinstance(prompt, list):
            names = {i: t for t, i in self.vocab.items()}
            return prompt, [names.get(i, "?") for i in prompt]
        pieces = WORD.findall(prompt)
        return [self.vocab.setdefault(p, len(self.vocab)) for p in pieces], pieces

    def completions(self, body: dict) -> dict:
        ids, pieces = self.ids(body.get("prompt", ""))
        if body.get("prompt_logprobs") is not None:
            entries = [None] + [{str(i): {"logprob": self.own, "rank": 1, "decoded_token": p}}
                                for i, p in zip(ids[1:], pieces[1:])]
            return {"choices": [{"index": 0, "text": "", "prompt_logprobs": entries, "prompt_token_ids": ids,
                                 "logprobs": {"tokens": pieces, "text_offset": [], "token_logprobs": [],
                                              "top_logprobs": []}}]}
        top = self.top if self.top_as_is else [self.top]
        return {"choices": [{"index": 0, "text": " Paris", "finish_reason": "length",
                             "logprobs": {"tokens": [" Paris"], "text_offset": [0], "token_logprobs": [-0.26],
                                          "top_logprobs": top}}]}

    def start(self) -> "ScriptedServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def reply(self, payload: Any) -> None:
                data = json.dumps(payload).encode()  # allow_nan: NaN, Infinity as Python writes them
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.reply({"object": "list", "data": [{"id": "scripted", "object": "model", "owned_by": "vllm",
                                                        "max_model_len": 2048}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path == "/tokenize":
                    self.reply({"count": len(server.ids(body.get("prompt", ""))[0]), "max_model_len": 2048,
                                "tokens": server.ids(body.get("prompt", ""))[0]})
                else:
                    self.reply(server.completions(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
