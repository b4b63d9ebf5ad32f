"""The openai backend against a fake server (httpx.MockTransport): the error shapes a real server
rarely produces on demand (401, 404, malformed JSON, 5xx, a capped top-n, no echo), the one-message
rule and recovery, and cancellation that closes a stream. The real server: test_openai_server.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from logitls.engine.openai_backend import EOS_ID, Cancelled, OpenAIBackend

MODELS = {"object": "list", "data": [{"id": "smol", "object": "model", "owned_by": "me"}]}


def completion(top: dict, text: str = " Paris") -> dict:
    return {"choices": [{"text": text, "index": 0, "finish_reason": "length",
                         "logprobs": {"tokens": [text], "text_offset": [0], "token_logprobs": [max(top.values())],
                                      "top_logprobs": [top]}}]}


class Fake:
    """A scripted server: `answers` maps a path to a function of the request body, or a list of them."""

    def __init__(self, **answers) -> None:
        self.answers = {"/v1/models": lambda body: httpx.Response(200, json=MODELS), **answers}
        self.requests: list[tuple[str, dict | None, httpx.Headers]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.url.path, body, request.headers))
        answer = self.answers[request.url.path]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        return answer(body)

    def posts(self) -> list[dict]:
        return [body for path, body, _ in self.requests if path == "/v1/completions"]


def backend(fake, messages: list, endpoint: str = "http://fake.test:1234", **options) -> OpenAIBackend:
    options.setdefault("backoff", 0.001)
    return OpenAIBackend.connect(endpoint, transport=httpx.MockTransport(fake),
                                 notify=lambda level, message: messages.append((level, message)), **options)


def ok(body):
    return httpx.Response(200, json=completion({" Paris": -0.26, " the": -2.7, " London": -4.4}))


def test_next_tokens_request_and_parse():
    fake, messages = Fake(**{"/v1/completions": ok}), []
    engine = backend(fake, messages)
    result = engine.next_tokens("The capital of France is", 3)
    assert [c.text for c in result.choices] == [" Paris", " the", " London"]
    assert [c.rank for c in result.choices] == [1, 2, 3]
    assert result.choices[0].prob == pytest.approx(0.771, abs=1e-3)
    sent = fake.posts()[0]
    assert sent["model"] == "smol" and sent["logprobs"] == 3 and sent["max_tokens"] == 1 and sent["temperature"] == 0
    assert sent["repeat_penalty"] == 1.0  # llama-cpp-python's default 1.1 would bend greedy
    assert engine.loaded.server_kind == "llama-cpp-python" and messages == []
    # the same text keeps the same synthetic id, so hover can mark the actual token among alternatives
    assert engine.next_tokens("x", 3).choices[0].id == result.choices[0].id


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("MY_TEAM_KEY", "sk-secret")
    fake, messages = Fake(**{"/v1/completions": ok}), []
    backend(fake, messages, "https://fake.test:1234", api_key_env="MY_TEAM_KEY").next_tokens("a", 2)
    assert all(headers["authorization"] == "Bearer sk-secret" for _, _, headers in fake.requests)
    monkeypatch.delenv("MY_TEAM_KEY")
    fake2 = Fake(**{"/v1/completions": ok})
    backend(fake2, [], "https://fake.test:1234", api_key_env="MY_TEAM_KEY").next_tokens("a", 2)
    assert all("authorization" not in headers for _, _, headers in fake2.requests)


@pytest.mark.parametrize("endpoint, sent", [
    ("http://127.0.0.1:8080/v1", True), ("http://localhost:8000", True), ("http://[::1]:8000/v1", True),
    ("http://127.3.4.5:8000", True), ("https://gpu.example.org/v1", True),
    ("http://gpu.example.org/v1", False), ("http://10.0.0.1:8000/v1", False), ("gpu.example.org:8000", False),
    ("http://localhost.evil.example/v1", False), ("http://127.0.0.1.nip.io/v1", False),
])
def test_the_key_never_goes_in_plain_text_off_this_machine(monkeypatch, endpoint, sent):
    monkeypatch.setenv("MY_TEAM_KEY", "sk-secret")
    fake, messages = Fake(**{"/v1/completions": ok}), []
    engine = backend(fake, messages, endpoint, api_key_env="MY_TEAM_KEY")
    assert engine.next_tokens("a", 2).choices  # the request itself still goes (a server without a key answers)
    assert all(("authorization" in headers) == sent for _, _, headers in fake.requests)
    warnings = [m for level, m in messages if level == "warning"]
    if sent:
        assert warnings == []
    else:
        assert len(warnings) == 1 and "MY_TEAM_KEY" in warnings[0] and "https" in warnings[0]
        assert "sk-secret" not in warnings[0]


def test_401_is_told_once_with_the_variable_name_and_results_are_empty():
    unauthorized = lambda body: httpx.Response(401, json={"error": {"message": "Invalid API key"}})
    fake, messages = Fake(**{"/v1/models": unauthorized, "/v1/completions": unauthorized}), []
    engine = backend(fake, messages, api_key_env="TEAM_KEY")
    for _ in range(5):
        assert engine.next_tokens("hello", 5).choices == []
        assert engine.token_scores("hello world").tokens == []
        assert list(engine.greedy("hello", max_new_tokens=5)) == []
    errors = [m for level, m in messages if level == "error"]
    assert len(errors) == 1, messages
    assert "HTTP 401" in errors[0] and "TEAM_KEY" in errors[0] and "Invalid API key" in errors[0]
    assert "sk-" not in errors[0]


def test_404_model_names_what_the_server_has():
    fake, messages = Fake(**{"/v1/completions": ok}), []
    engine = backend(fake, messages, model="gpt-5")
    assert messages and messages[0][0] == "error"
    assert "'gpt-5'" in messages[0][1] and "smol" in messages[0][1] and "apiModel" in messages[0][1]
    fake404 = Fake(**{"/v1/models": lambda b: httpx.Response(200, json={"data": []}),
                      "/v1/completions": lambda b: httpx.Response(404, json={"detail": "Not Found"})})
    messages.clear()
    engine = backend(fake404, messages, model="gpt-5")
    assert engine.next_tokens("a", 3).choices == []
    assert len(messages) == 1 and "HTTP 404" in messages[0][1] and "gpt-5" in messages[0][1]


def test_malformed_json_is_told_once_then_recovers():
    broken = lambda body: httpx.Response(200, content=b"{not json", headers={"content-type": "application/json"})
    fake, messages = Fake(**{"/v1/completions": [broken, broken, ok]}), []
    engine = backend(fake, messages)
    assert engine.next_tokens("a", 3).choices == []
    assert engine.next_tokens("a", 3).choices == []
    assert [level for level, _ in messages] == ["error"] and "malformed JSON" in messages[0][1]
    assert [c.text for c in engine.next_tokens("a", 3).choices][0] == " Paris"
    assert [level for level, _ in messages] == ["error", "info"] and "answers again" in messages[1][1]
    no_choices = Fake(**{"/v1/completions": lambda body: httpx.Response(200, json={"id": "x"})})
    messages.clear()
    assert backend(no_choices, messages).next_tokens("a", 3).choices == []
    assert len(messages) == 1 and "without choices" in messages[0][1]


def test_5xx_and_connection_errors_are_retried_with_backoff():
    def refused(body):
        raise httpx.ConnectError("connection refused")

    fake, messages = Fake(**{"/v1/completions": [lambda b: httpx.Response(503, text="busy"), refused, ok]}), []
    engine = backend(fake, messages, retries=3)
    assert engine.next_tokens("a", 3).choices[0].text == " Paris"
    assert len(fake.posts()) == 3 and messages == []
    # always failing: retries + 1 tries, one message; while down, one try per request (keystrokes stay quick)
    fake = Fake(**{"/v1/completions": refused})
    engine = backend(fake, messages, retries=2)
    engine.next_tokens("a", 3)
    assert len(fake.posts()) == 3
    engine.next_tokens("a", 3)
    engine.next_tokens("a", 3)
    assert len(fake.posts()) == 5
    assert [level for level, _ in messages] == ["error"] and "cannot reach" in messages[0][1]


def test_a_capped_top_n_is_read_from_the_refusal_and_stated_once():
    def vllm_like(body):
        if body["logprobs"] > 20:
            return httpx.Response(400, json={"object": "error", "message": f"Requested sample logprobs of "
                                             f"{body['logprobs']}, which is greater than max allowed: 20"})
        return httpx.Response(200, json=completion({f" t{i}": -0.1 * (i + 1) for i in range(body["logprobs"])}))

    fake, messages = Fake(**{"/v1/completions": vllm_like}), []
    engine = backend(fake, messages)
    assert len(engine.next_tokens("a", 26).choices) == 20
    assert len(engine.next_tokens("b", 26).choices) == 20
    assert engine.top_n_cap == 20
    assert len(messages) == 1 and messages[0][0] == "info" and "at most 20" in messages[0][1]
    assert [p["logprobs"] for p in fake.posts()] == [26, 20, 20]


def test_hover_scores_from_echo_and_degrades_without_it():
    text = "The capital of France"
    pieces = ["The", " capital", " of", " France"]

    def echo(body):
        assert body["echo"] is True and body["max_tokens"] == 1
        offsets = [0, 3, 11, 14, 21]
        return httpx.Response(200, json={"choices": [{"text": text + " is", "logprobs": {
            "tokens": pieces + [" is"], "text_offset": offsets,
            "token_logprobs": [None, -5.0, -0.5, -9.0, -0.3],
            "top_logprobs": [None, {" first": -1.0, " capital": -5.0}, {" of": -0.5, " city": -2.0},
                             {" Italy": -1.0, " Spain": -2.0}, {" is": -0.3}]}}]})

    # An OpenAI-compatible server of no known kind that states its context (as vLLM's entry does)
    models = {"data": [{"id": "smol", "owned_by": "someone", "max_model_len": 2048}]}
    fake, messages = Fake(**{"/v1/models": lambda b: httpx.Response(200, json=models), "/v1/completions": echo}), []
    engine = backend(fake, messages, alternatives=2)
    assert engine.loaded.server_kind == "openai-compatible" and engine.context_window == 2048
    assert engine.capabilities.ranks == "top-k" and not engine.capabilities.document_scores
    scores = engine.token_scores(text)
    assert [(s.token.text, s.start, s.end) for s in scores.tokens] == [
        ("The", 0, 3), (" capital", 3, 11), (" of", 11, 14), (" France", 14, 21)]
    first, capital, of, france = scores.tokens
    assert first.prob is None
    assert capital.rank == 2 and of.rank == 1 and capital.logprob == -5.0
    assert france.rank is None  # below both listed alternatives: its rank is not known
    assert [a.text for a in capital.alternatives] == [" first", " capital"]
    assert engine.token_scores(text, document="d") is engine.token_scores(text, document="d")  # kept per document
    assert len(fake.posts()) == 2
    # llama-server style: no echo of the prompt, only the generated token
    no_echo = Fake(**{"/v1/completions": lambda body: httpx.Response(200, json=completion({" is": -0.3}, " is"))})
    messages.clear()
    engine = backend(no_echo, messages)
    assert engine.token_scores(text).tokens == []
    assert engine.token_scores(text).tokens == []
    assert len(no_echo.posts()) == 1 and len(messages) == 1 and "echo" in messages[0][1]
    assert engine.capabilities.ranks == "none" and engine.down is None  # a fact about the server, not a failure


def test_llama_server_chat_style_logprobs():
    def chat_style(body):
        return httpx.Response(200, json={"choices": [{"text": " Paris", "logprobs": {"content": [
            {"id": 7042, "token": " Paris", "logprob": -0.26, "top_logprobs": [
                {"id": 7042, "token": " Paris", "logprob": -0.26}, {"id": 260, "token": " the", "logprob": -2.7}]}]}}]})

    engine = backend(Fake(**{"/v1/completions": chat_style}), [])
    assert [c.text for c in engine.next_tokens("x", 2).choices] == [" Paris", " the"]


def test_a_text_too_long_for_the_server_is_cut_from_the_left():
    def limited(body):
        if len(body["prompt"]) > 40:
            return httpx.Response(400, json={"error": {"message": "Requested tokens (60) exceed context window of 32"}})
        return ok(body)

    text = "".join(f"line {i}\n" for i in range(20))
    fake, messages = Fake(**{"/v1/completions": limited}), []
    result = backend(fake, messages).next_tokens(text, 3)
    assert result.truncated and result.choices and messages == []
    assert text.endswith(fake.posts()[-1]["prompt"]) and fake.posts()[-1]["prompt"].startswith("line")


def sse(chunks):
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_greedy_streams_and_ends_with_eos():
    def stream(body):
        assert body["stream"] is True and body["temperature"] == 0 and body["max_tokens"] == 10
        chunks = [{"choices": [{"text": t, "finish_reason": None}]} for t in (" Paris", ".")]
        chunks.append({"choices": [{"text": "", "finish_reason": "stop"}]})
        return httpx.Response(200, text=sse(chunks), headers={"content-type": "text/event-stream"})

    engine = backend(Fake(**{"/v1/completions": stream}), [])
    steps = list(engine.greedy("The capital of France is", max_new_tokens=10))
    assert [s.text for s in steps] == [" Paris", ".", ""]
    assert steps[-1].token.id == EOS_ID and EOS_ID in engine.eos_ids
    assert engine.generate_text("x", max_new_tokens=10) == " Paris."


def test_should_stop_closes_the_stream():
    closed = threading.Event()

    async def slow_events():
        try:
            for i in range(1000):
                yield f"data: {json.dumps({'choices': [{'text': f' w{i}', 'finish_reason': None}]})}\n\n".encode()
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    def stream(body):
        return httpx.Response(200, content=slow_events(), headers={"content-type": "text/event-stream"})

    engine = backend(Fake(**{"/v1/completions": stream}), [])
    started = time.monotonic()
    got = []
    with pytest.raises(Cancelled):
        for step in engine.greedy("x", max_new_tokens=1000, should_stop=lambda: len(got) >= 5):
            got.append(step)
    assert len(got) == 5 and time.monotonic() - started < 2
    assert closed.wait(2), "the stream was not closed"
    # the consumer breaking off early (inline completion at the end of a line) closes it too
    closed.clear()
    for step in engine.greedy("x", max_new_tokens=1000):
        break
    assert closed.wait(2)


def test_should_stop_abandons_a_request_that_is_waiting():
    async def slow(request):
        await asyncio.sleep(30)
        return ok(None)

    engine = OpenAIBackend("http://fake.test", model="smol", transport=httpx.MockTransport(slow))
    started = time.monotonic()
    with pytest.raises(Cancelled):
        engine.next_tokens("x", 3, should_stop=lambda: time.monotonic() - started > 0.2)
    assert time.monotonic() - started < 1.5

# -- the top-n cap: only the number a server states as its limit ------------------------------------

def capped(message: str, cap: int):
    """A server that refuses more than `cap` logprobs with `message` (a 400, OpenAI's error shape)."""
    def answer(body):
        if body["logprobs"] > cap:
            return httpx.Response(400, json={"error": {"message": message, "type": "invalid_request_error"}})
        return httpx.Response(200, json=completion({f" t{i}": -0.1 * (i + 1) for i in range(body["logprobs"])}))
    return answer


@pytest.mark.parametrize("message, cap", [
    ("Requested sample logprobs of 26, which is greater than max allowed: 20", 20),  # vLLM
    ("Requested sample logprobs of 26, which is greater than max allowed: 20 (parameter=logprobs, value=26)", 20),
    ("Cannot request more than 5 logprobs.", 5),  # older vLLM
    ("26 is greater than the maximum of 1 - 'logprobs'", 1),  # Together
    ("Invalid value for 'logprobs': must be less than or equal to 5.", 5),  # OpenAI
    ("logprobs must be at most 8 (server http://10.0.0.1:8000/v1, worker 192.168.3.2)", 8),
    ("Invalid 'logprobs': integer above maximum value. Expected a value <= 12, but got 26 instead.", 12),
])
def test_the_cap_is_the_number_the_server_states_as_its_limit(message, cap):
    fake, messages = Fake(**{"/v1/completions": capped(message, cap)}), []
    engine = backend(fake, messages)
    assert len(engine.next_tokens("a", 26).choices) == cap
    assert engine.top_n_cap == cap
    assert [p["logprobs"] for p in fake.posts()] == [26, cap]
    assert len(messages) == 1 and f"at most {cap} " in messages[0][1]


def test_numbers_in_a_url_or_address_never_become_the_cap():
    # A refusal that names no limit, but the endpoint's address: try OpenAI's 5 once, not 1 (from /v1, .1).
    fake, messages = Fake(**{"/v1/completions": capped(
        "logprobs are limited on http://10.0.0.1:8000/v1 (ask the admin)", 5)}), []
    engine = backend(fake, messages)
    assert len(engine.next_tokens("a", 10).choices) == 5
    assert engine.top_n_cap == 5 and [p["logprobs"] for p in fake.posts()] == [10, 5]


def test_a_logprobs_refusal_that_states_no_limit_does_not_lower_the_cap_for_good():
    # Refused whatever k is asked (logprobs switched off, say): one guess at 5, then the error; no cap kept.
    refuse = lambda body: httpx.Response(400, json={"error": {"message": "logprobs are not available on "
                                                                         "http://10.0.0.1:8000/v1"}})
    fake, messages = Fake(**{"/v1/completions": refuse}), []
    engine = backend(fake, messages)
    assert engine.next_tokens("a", 10).choices == []
    assert engine.top_n_cap is None
    assert [p["logprobs"] for p in fake.posts()] == [10, 5]
    assert [level for level, _ in messages] == ["error"] and "HTTP 400" in messages[0][1]
    assert engine.next_tokens("a", 3).choices == []
    assert [p["logprobs"] for p in fake.posts()][2:] == [3]  # at or below 5: no guess, asked once


# -- llama-cpp-python's echo and the hover it gives ---------------------------------------------

# llama-cpp-python 0.3.x for a model without BOS (the embedded SmolLM2): entry i of the echo holds the
# distribution AFTER token i, and entry 0 is blanked to null (OpenAI's "first token" convention), so
# the distribution that predicts token 1 never comes back in the echo.
LLAMA_CPP_PYTHON_ECHO = {"choices": [{"text": "The capital of France is Paris", "index": 0, "finish_reason": "length",
                                      "logprobs": {"text_offset": [0, 3, 11, 14, 21],
                                                   "token_logprobs": [None, -9.5999, -10.4624, -11.2255, -11.7948],
                                                   "tokens": ["The", " capital", " of", " France", " is"],
                                                   "top_logprobs": [None,
                                                                    {" of": -0.412, " city": -2.308, "ized": -2.773, " capital": -9.5999},
                                                                    {" the": -1.988, " France": -2.521, " Spain": -3.553, " of": -10.46},
                                                                    {" is": -0.432, ",": -2.480, " lies": -2.545, " France": -11.2},
                                                                    {" Paris": -0.264, " the": -2.804, " London": -4.40, " is": -11.79}]}}]}
# The same server asked for the next token after "The" alone (no echo): the distribution that predicts token 1.
AFTER_THE = {" first": -2.1, " following": -2.9, " best": -3.2, " most": -3.4}


def llama_cpp_python(body):
    if body.get("echo"):
        return httpx.Response(200, json=LLAMA_CPP_PYTHON_ECHO)
    assert body["prompt"] == "The" and body["max_tokens"] == 1
    top = dict(list(AFTER_THE.items())[: body["logprobs"]])
    return httpx.Response(200, json=completion(top, " first"))


def capped_at_3(fake) -> OpenAIBackend:
    engine = backend(fake, [], alternatives=3)
    engine.top_n_cap = 3  # what the canned answers were asked for
    return engine


def test_the_second_token_gets_the_distribution_the_echo_leaves_out():
    fake = Fake(**{"/v1/completions": llama_cpp_python})
    engine = capped_at_3(fake)
    first, capital, of, france, is_ = engine.token_scores("The capital of France is").tokens
    assert first.prob is None and first.alternatives == []
    # " capital" is below every alternative the server listed after "The": known only as p < the last one
    assert capital.prob is None and capital.rank is None
    assert [a.text for a in capital.alternatives] == [" first", " following", " best"]
    assert of.logprob == -0.412 and of.rank == 1
    assert france.logprob == -2.521 and france.rank == 2
    assert is_.logprob == -0.432 and is_.rank == 1
    # the spurious self-entry llama-cpp-python adds to each distribution is not an alternative
    assert " capital" not in [a.text for a in of.alternatives]
    assert [p.get("echo", False) for p in fake.posts()] == [True, False]


def test_when_that_request_fails_the_other_tokens_keep_their_scores():
    def echo_only(body):
        if body.get("echo"):
            return httpx.Response(200, json=LLAMA_CPP_PYTHON_ECHO)
        return httpx.Response(400, json={"error": {"message": "bad prompt"}})

    from logitls.lsp.hover import hover_markdown

    first, capital, of, france, is_ = capped_at_3(Fake(**{"/v1/completions": echo_only})).token_scores(
        "The capital of France is").tokens
    assert capital.prob is None and capital.alternatives == [] and of.rank == 1 and is_.rank == 1
    assert "no probability" in hover_markdown(capital, None)


def test_llama_cpp_python_with_a_bos_model_echoes_unshifted():
    # With BOS first (most Llama GGUFs), entry i predicts token i and the echo goes on to the generated token.
    answer = {"choices": [{"text": "The capital of France is Paris", "index": 0, "finish_reason": "length",
                           "logprobs": {"text_offset": [0, 3, 11, 14, 21, 24],
                                        "token_logprobs": [None, -7.0, -0.4, -2.5, -0.43, -0.26],
                                        "tokens": ["The", " capital", " of", " France", " is", " Paris"],
                                        "top_logprobs": [None,
                                                         {" first": -2.1, " following": -2.9, " best": -3.2, " capital": -7.0},
                                                         {" of": -0.4, " city": -2.3, "ized": -2.8},
                                                         {" the": -1.9, " France": -2.5, " Spain": -3.5},
                                                         {" is": -0.43, ",": -2.48, " lies": -2.5},
                                                         {" Paris": -0.26, " the": -2.8, " London": -4.4}]}}]}
    fake = Fake(**{"/v1/completions": lambda body: httpx.Response(200, json=answer)})
    engine = capped_at_3(fake)
    first, capital, of, france, is_ = engine.token_scores("The capital of France is").tokens
    assert first.prob is None and first.alternatives == []
    assert capital.logprob == -7.0 and capital.rank is None  # known, but below the 3 listed
    assert [a.text for a in capital.alternatives] == [" first", " following", " best"]
    assert of.rank == 1 and france.logprob == -2.5 and france.rank == 2 and is_.logprob == -0.43
    assert len(fake.posts()) == 1  # nothing blanked that is needed: no second request


def test_hover_below_the_listed_alternatives_says_so_with_the_bound():
    from logitls.lsp.hover import hover_markdown

    engine = capped_at_3(Fake(**{"/v1/completions": llama_cpp_python}))
    first, capital, *_ = engine.token_scores("The capital of France is").tokens
    text = hover_markdown(capital, None)
    assert "first token" not in text
    assert "below the 3 alternatives" in text and "p < 4.1%" in text  # the 3rd: exp(-3.2)
    assert "| 1 | `␣first` | 12.2% |" in text and "| 3 | `␣best` | 4.1% |" in text
    # the hover shows fewer rows than the server listed: the bound stays the last listed one's
    short = hover_markdown(capital, None, limit=2)
    assert "| 2 | `␣following` |" in short and "| 3 |" not in short and "p < 4.1%" in short
    assert "first token" in hover_markdown(first, None)


def test_hover_on_a_later_token_the_server_gave_nothing_for_is_not_called_the_first():
    from logitls.engine.types import Token, TokenScore
    from logitls.lsp.hover import hover_markdown

    missing = TokenScore(3, Token(7, " France"), 14, 21, None, None, None, [])
    text = hover_markdown(missing, None)
    assert "first token" not in text and "no probability" in text


def test_a_refused_echo_is_a_fact_about_the_server_not_a_failure():
    # llama-server's /v1/completions answers `echo` with a 400: before, that marked the server down,
    # the next completion marked it up again, and every hover brought both messages back.
    def completions(body):
        if body.get("echo"):
            return httpx.Response(400, json={"error": {"code": 400, "type": "invalid_request_error",
                                                       "message": "Only no echo is supported"}})
        return ok(body)

    models = {"data": [{"id": "smol", "owned_by": "someone"}]}
    fake, messages = Fake(**{"/v1/models": lambda b: httpx.Response(200, json=models),
                             "/v1/completions": completions}), []
    engine = backend(fake, messages)
    for _ in range(3):
        assert engine.token_scores("The capital of France").tokens == []
        assert engine.next_tokens("The capital of France", 3).choices
    assert engine.down is None and engine.capabilities.ranks == "none"
    assert [level for level, _ in messages] == ["warning"] and "refuses `echo`" in messages[0][1]
    assert len([p for p in fake.posts() if p.get("echo")]) == 1  # asked once: the answer is kept


def test_the_local_engine_and_every_server_dialect_answer_one_protocol(tiny_engine):
    from logitls.engine.openai_backend.dialects import DIALECTS, detect
    from logitls.engine.types import LOCAL, Backend

    assert isinstance(tiny_engine, Backend) and tiny_engine.capabilities is LOCAL
    remote = OpenAIBackend("http://127.0.0.1:9")
    assert isinstance(remote, Backend) and remote.capabilities.scored_remotely
    entries = {"vllm": {"owned_by": "vllm"}, "llama.cpp": {"owned_by": "llamacpp", "meta": {}},
               "llama-cpp-python": {"owned_by": "me"}, "openai-compatible": {"owned_by": "openai"}}
    assert {name: detect(entry).name for name, entry in entries.items()} == {name: name for name in entries}
    assert [d.name for d in DIALECTS][-1] == "openai-compatible"  # the fallback is tried last
    capabilities = {d.name: d.capabilities for d in DIALECTS}
    assert capabilities["vllm"].ranks == "exact" and capabilities["vllm"].document_scores
    assert capabilities["llama.cpp"].ranks == "top-k" and not capabilities["llama.cpp"].document_scores
    assert not any(c.healing for c in capabilities.values())


@pytest.mark.parametrize("owner, sent, dropped", [
    ("me", {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "seed": 3}, None),  # llama-cpp-python
    ("openai", {"temperature": 0.7, "top_p": 0.9, "seed": 3}, "top_k, min_p"),  # the OpenAI API's fields only
])
def test_sampled_generation_passes_the_samplers_and_says_which_it_cannot(owner, sent, dropped):
    from logitls.engine.sampling import SamplingParams

    def stream(body):
        chunks = [{"choices": [{"text": " Lyon", "finish_reason": None}]},
                  {"choices": [{"text": "", "finish_reason": "length"}]}]
        return httpx.Response(200, text=sse(chunks), headers={"content-type": "text/event-stream"})

    models = {"object": "list", "data": [{"id": "smol", "object": "model", "owned_by": owner}]}
    fake, messages = Fake(**{"/v1/models": lambda body: httpx.Response(200, json=models),
                             "/v1/completions": stream}), []
    engine = backend(fake, messages)
    params = SamplingParams(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, seed=3)
    assert engine.generate_text("The capital of France is", max_new_tokens=4, sampling=params) == " Lyon"
    body = fake.posts()[-1]
    assert {k: body[k] for k in ("temperature", "top_k", "top_p", "min_p", "seed") if k in body} == sent
    said = [m for _, m in messages if "takes no" in m]
    assert (said == []) if dropped is None else (len(said) == 1 and f"takes no {dropped}" in said[0])
    assert engine.capabilities.sampled_distribution is False
    engine.generate_text("x", max_new_tokens=4)
    assert fake.posts()[-1]["temperature"] == 0 and "top_p" not in fake.posts()[-1]
