"""textDocument/hover end to end: the numbers are the engine's, the range covers the token."""

from __future__ import annotations

import re

import pytest

from lsprotocol import types

from conftest import open_document



def shown_numbers(value: str) -> tuple[float, int]:
    match = re.search(r"p = ([\d.e+-]+) .*?, rank (\d+) of", value)
    return float(match.group(1)), int(match.group(2))


def assert_same_numbers(value: str, score) -> None:
    """Probability to 4 digits; rank exact near the top, within a few places deep in the tail, where
    fp32 kernels in two processes can order near-equal tokens differently."""
    prob, rank = shown_numbers(value)
    assert prob == pytest.approx(score.prob, rel=1e-3)
    assert abs(rank - score.rank) <= (0 if score.rank <= 100 else max(2, score.rank // 1000))


def hover(client, uri: str, line: int, character: int):
    return client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character)))


async def test_hover_numbers_equal_the_engines(tiny_client, tiny_gpt2_engine):
    text = "The quick brown fox jumps over the lazy dog"
    uri = "file:///hover/fox.txt"
    open_document(tiny_client, uri, text)
    scores = tiny_gpt2_engine.token_scores(text)
    fox = next(s for s in scores.tokens if s.token.text == " fox")
    result = await hover(tiny_client, uri, 0, fox.start + 2)
    assert result.range == types.Range(start=types.Position(line=0, character=fox.start),
                                       end=types.Position(line=0, character=fox.end))
    value = result.contents.value
    assert_same_numbers(value, fox)
    assert f" of {tiny_gpt2_engine.vocab_size}," in value
    assert f"{fox.surprisal_bits:.2f} bits" in value
    rows = re.findall(r"^\| (\d+) \| `([^`]*)`", value, flags=re.M)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4, 5]
    assert [r[1] for r in rows] == [a.text.replace(" ", "␣") for a in fox.alternatives[:5]]


async def test_hover_on_the_first_token_says_it_has_no_context(tiny_client):
    uri = "file:///hover/first.txt"
    open_document(tiny_client, uri, "Hello there")
    result = await hover(tiny_client, uri, 0, 1)
    assert "first token" in result.contents.value


async def test_hover_ranges_are_utf16_on_a_multibyte_line(tiny_client, tiny_gpt2_engine):
    text = "# héllo 😀 world"
    uri = "file:///hover/emoji.txt"
    open_document(tiny_client, uri, text)
    world = next(s for s in tiny_gpt2_engine.token_scores(text).tokens if s.token.text == " world")
    result = await hover(tiny_client, uri, 0, 12)  # UTF-16: 'w' of world (the emoji counts 2)
    assert result.range.start == types.Position(line=0, character=10)  # the space before world
    assert result.range.end == types.Position(line=0, character=16)
    assert_same_numbers(result.contents.value, world)


async def test_hover_past_the_end_of_the_text_is_empty(tiny_client):
    uri = "file:///hover/end.txt"
    open_document(tiny_client, uri, "short\n")
    assert await hover(tiny_client, uri, 1, 0) is None


async def test_default_model_hover_on_paris(default_client, default_engine):
    text = "The capital of France is Paris"
    uri = "file:///hover/paris.txt"
    open_document(default_client, uri, text)
    result = await hover(default_client, uri, 0, 27)
    value = result.contents.value
    paris = next(s for s in default_engine.token_scores(text).tokens if s.token.text == " Paris")
    assert value.startswith("**`␣Paris`**")
    assert f"p = {paris.prob:.4g} (77.3%), rank 1 of 49152" in value


async def test_hover_far_from_the_end_of_a_long_document(tiny_client, tiny_gpt2_engine):
    """Longer than the context window: the hover still has numbers for an early token, the lens's numbers."""
    text = " ".join(f"word{i % 9}" for i in range(150))
    uri = "file:///hover/long.txt"
    open_document(tiny_client, uri, text)
    scores = tiny_gpt2_engine.document_scores(text)
    assert scores.truncated
    early = scores.tokens[5]
    result = await hover(tiny_client, uri, 0, early.start)
    assert_same_numbers(result.contents.value, early)


async def test_a_hover_deep_in_a_long_document_lets_a_completion_through(tiny_models, tiny_gpt2_engine):
    """Lens off, a document many windows long: the hover scores the window that ends at its token, in
    small chunks, and a completion that arrives meanwhile is answered first (order, not time)."""
    import asyncio

    from conftest import hold_model_thread, release_model_thread, start_session, wait_until_held, wait_until_queued

    from logitls.engine import Engine
    from logitls.engine.windows import window_start

    client = await start_session({"model": str(tiny_models["gpt2"]), "device": "cpu", "maxContextTokens": 64,
                                  "lens": {"enabled": False}})
    try:
        text = " ".join(f"word{i % 7}" for i in range(400))
        ids, offsets = tiny_gpt2_engine.vocabulary.encode(text)
        index = len(ids) // 2
        uri, short_uri = "file:///hover/long.txt", "file:///hover/short.txt"
        open_document(client, uri, text)
        open_document(client, short_uri, "The capital")
        answered: list[str] = []
        mark = hold_model_thread(client, at_check=2, key_contains=f"{uri}', 'hover")
        hovering = asyncio.ensure_future(hover(client, uri, 0, offsets[index][0] + 1))
        hovering.add_done_callback(lambda _: answered.append("hover"))
        await wait_until_held(client, mark)  # one chunk of the hover's window fed, more to go
        completing = asyncio.ensure_future(client.text_document_completion_async(types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=short_uri), position=types.Position(line=0, character=11))))
        completing.add_done_callback(lambda _: answered.append("completion"))
        await wait_until_queued(client)
        release_model_thread(client)
        completion, result = await asyncio.wait_for(asyncio.gather(completing, hovering), 600)
        assert answered == ["completion", "hover"]
        assert completion.items
        fresh = Engine(tiny_gpt2_engine.loaded)
        start = window_start(index + 1, fresh.text_window)
        cut = text[offsets[start][0]: offsets[index][1]]  # the window before the token, as a text of its own
        expected = fresh.token_scores(cut).tokens[-1]
        assert expected.token.id == ids[index]
        assert result.range.start.character == offsets[index][0]
        assert_same_numbers(result.contents.value, expected)

        # A newer hover on the same document supersedes an older one for good: no taking turns.
        mark = hold_model_thread(client, at_check=2, key_contains=f"{uri}', 'hover")
        older = asyncio.ensure_future(hover(client, uri, 0, offsets[index + 60][0]))
        await wait_until_held(client, mark)
        newer = asyncio.ensure_future(hover(client, uri, 0, offsets[index + 61][0]))
        await wait_until_queued(client)
        release_model_thread(client)
        older, newer = await asyncio.wait_for(asyncio.gather(older, newer), 600)
        assert older is None and newer.range.start.character == offsets[index + 61][0]
    finally:
        await client.shutdown_session()
