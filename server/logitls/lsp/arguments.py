"""Reading `workspace/executeCommand` arguments: one reader for every command's JSON object.

A client sends command arguments untyped, so each field is checked here, with one kind of message:
an InvalidParams naming the command, the field, what it must be and the shape expected. Fields are
read by their camelCase wire name (or the snake_case one of an attrs object).
"""

from __future__ import annotations

from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

MAX_INT = 2 ** 31 - 1  # lsprotocol's range for an integer: outside it, building a Position raises


def field(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if not isinstance(obj, dict) and hasattr(obj, name):
            return getattr(obj, name)
    return None


def is_int(value: Any, low: int = 0, high: int = MAX_INT) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def single_argument(command: str, usage: str, args: tuple[Any, ...]) -> Any:
    if len(args) != 1:
        raise JsonRpcInvalidParams(f"{command}: {usage}; got {len(args)} arguments")
    return args[0]


def document_uri(command: str, usage: str, arg: Any, name: str = "") -> str:
    """`textDocument.uri` of an argument (`name`: which one, where a command takes several)."""
    uri = field(field(arg, "textDocument", "text_document"), "uri")
    if not isinstance(uri, str) or not uri:
        raise JsonRpcInvalidParams(f"{command}: {name + ' ' if name else ''}textDocument.uri is missing; {usage}")
    return uri


def position(command: str, usage: str, obj: Any, where: str = "position") -> types.Position:
    line, character = field(obj, "line"), field(obj, "character")
    if not (is_int(line) and is_int(character)):
        raise JsonRpcInvalidParams(f"{command}: {where}.line and {where}.character must be integers from 0 to "
                                   f"2^31-1; {usage}")
    return types.Position(line=line, character=character)


def document_position(command: str, usage: str, arg: Any) -> tuple[str, types.Position]:
    """The `textDocument.uri` and `position` of a command's argument."""
    return document_uri(command, usage, arg), position(command, usage, field(arg, "position"))


def document_range(command: str, usage: str, arg: Any, name: str = "") -> tuple[str, types.Range]:
    """The `textDocument.uri` and a non-empty `range` of a command's argument."""
    uri = document_uri(command, usage, arg, name)
    where = field(arg, "range")
    prefix = f"{name}'s " if name else ""
    if where is None:
        raise JsonRpcInvalidParams(f"{command}: {prefix}range is missing; {usage}")
    start = position(command, usage, field(where, "start"), f"{prefix}range.start")
    end = position(command, usage, field(where, "end"), f"{prefix}range.end")
    if (end.line, end.character) <= (start.line, start.character):
        raise JsonRpcInvalidParams(f"{command}: {prefix}range is empty or reversed ({start.line}:{start.character}"
                                   f" to {end.line}:{end.character}): select some text")
    return uri, types.Range(start=start, end=end)


def optional_int(command: str, arg: Any, name: str, low: int, high: int, usage: str = "", *aliases: str) -> int | None:
    """An optional integer field, within [low, high]."""
    value = field(arg, name, *aliases)
    if value is not None and not is_int(value, low, high):
        raise JsonRpcInvalidParams(f"{command}: {name} must be an integer from {low} to {high}, got {value!r}"
                                   + (f"; {usage}" if usage else ""))
    return value


SAMPLER_FIELDS = (("temperature", "temperature"), ("topK", "top_k"), ("topP", "top_p"), ("minP", "min_p"))


def sampling(command: str, arg: Any, settings: Any) -> Any:
    """SamplingParams from a command's optional `temperature`, `topK`, `topP`, `minP` and `seed` over the
    `generate.sampling` settings (field by field); None where the result is greedy. Arguments that name a
    sampler but no temperature, over settings at temperature 0, sample at temperature 1."""
    from ..engine.sampling import SamplingParams

    values = {name: getattr(settings, name) for _, name in SAMPLER_FIELDS}
    named = False
    for wire, name in SAMPLER_FIELDS:
        value = field(arg, wire, name)
        if value is None:
            continue
        kind = int if name == "top_k" else float
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)) \
                or value != value or value in (float("inf"), float("-inf")):
            raise JsonRpcInvalidParams(f"{command}: {wire} must be a finite {'whole ' if kind is int else ''}number, "
                                       f"got {value!r}")
        values[name] = kind(value)
        named = True
    if named and field(arg, "temperature") is None and values["temperature"] == 0:
        values["temperature"] = 1.0
    seed = field(arg, "seed")
    if seed is not None and not is_int(seed, -1):
        raise JsonRpcInvalidParams(f"{command}: seed must be an integer from -1 to 2^31-1, got {seed!r}")
    seed = settings.seed if seed is None else seed
    try:
        params = SamplingParams(**values, seed=None if seed < 0 else seed)
    except ValueError as exc:
        message = str(exc)
        for wire, name in SAMPLER_FIELDS:
            message = message.replace(name, wire)
        raise JsonRpcInvalidParams(f"{command}: {message}") from None
    return None if params.greedy else params
