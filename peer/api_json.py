"""Strict JSON for request bodies, and short echoes of bad input.

Python's `json` accepts what a money API should not: integers of any length (converting 5,000 digits
raised a ValueError outside the ones the API caught, hence a plain-text 500) and duplicate keys (the
last one silently wins, so two readers of one body can disagree on what it says). `loads` refuses
both, and nesting deeper than `MAX_DEPTH`, with `BadJson`, the only error it raises. (`NaN` and
`Infinity` still parse, as Python's non-finite floats; every field that takes a number refuses them.)
"""

from __future__ import annotations

import json
from typing import Any

MAX_INT_DIGITS = 40  # far beyond any amount, sequence or timeout; int() of it is cheap
MAX_NUMBER_CHARS = 64
MAX_DEPTH = 32
ECHO_CHARS = 80  # how much of a bad value an error message quotes


class BadJson(ValueError):
    """A request body that is not a strict JSON document (see the module docstring)."""


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise BadJson(f"an integer of {len(text.lstrip('-'))} digits is too long (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadJson(f"a number of {len(text)} characters is too long (at most {MAX_NUMBER_CHARS})")
    return float(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise BadJson(f"key {echo(key)} appears twice")
        doc[key] = value
    return doc


def _depth(raw: str) -> int:
    """Deepest nesting of brackets outside strings (cheap, before the recursive parser runs)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in raw:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(body: bytes) -> Any:
    """Parse a request body; `BadJson` (with a short reason) for anything that is not strict JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadJson(f"body is not UTF-8 (byte {exc.start})") from exc
    if _depth(text) > MAX_DEPTH:
        raise BadJson(f"body nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_int=_int, parse_float=_float, object_pairs_hook=_object)
    except BadJson:
        raise
    except json.JSONDecodeError as exc:
        raise BadJson(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except (ValueError, RecursionError) as exc:
        raise BadJson(f"body is not JSON: {echo(str(exc))}") from exc


def echo(value: object) -> str:
    """`repr` of a bad value for an error message, cut to `ECHO_CHARS` characters."""
    text = repr(value)
    if len(text) <= ECHO_CHARS:
        return text
    return f"{text[:ECHO_CHARS]}… ({len(text)} characters)"
