"""JSON request bodies as the serving stack accepts them: standard JSON, bounded nesting, valid Unicode text.

Python's ``json`` takes ``NaN`` and ``Infinity``, recurses once per nesting level and keeps lone UTF-16
surrogates (``"\\ud800"``) in strings, none of which the rest of the stack can take: a deep body exhausts
the interpreter's recursion limit, a surrogate cannot be encoded for the tokenizer or the wire. Every body
is parsed here, so each of those is a 400 that names what is wrong and where, on the gateway and on the
Triton ``chat`` model alike.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

from nemo_protocol.errors import BadRequestError

MAX_JSON_DEPTH = 256
"""Deepest nesting the ``chat`` model parses (the gateway's own limit defaults lower, see RequestLimits)."""


class _NotANumber:
    """What ``NaN``, ``Infinity`` and ``-Infinity`` parse to: :func:`check_json_value` refuses it where it stands,
    so that the error names the field (``json`` tells ``parse_constant`` the constant, never its place)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def _refuse_constant(name: str) -> _NotANumber:
    return _NotANumber(name)


def parse_json_object(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """``raw`` as a JSON object whose nesting and text :func:`check_json_value` accepts; else BadRequestError.
    ``NaN`` and ``(-)Infinity`` are refused naming the field that holds them."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequestError(f"the request body is nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise BadRequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object")
    check_json_value(body, max_depth=max_depth)
    return body


def check_json_value(value: Any, *, max_depth: int = MAX_JSON_DEPTH, path: str = "") -> None:
    """Raise BadRequestError, ``param`` the path, where ``value`` nests deeper than ``max_depth``, holds text
    (a string or a key) that is not valid Unicode, or a number that is not finite (``NaN`` / ``Infinity``, or a
    literal such as ``1e999`` that overflows to infinity). Iterative, so that it never recurses itself."""
    pending: list[tuple[Any, str, int]] = [(value, path, 0)]
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item, where)
        elif isinstance(item, _NotANumber):
            raise BadRequestError(
                f"{item.name} is not a JSON number: the request body is not valid JSON", param=where or None
            )
        elif isinstance(item, float) and not math.isfinite(item):
            # 1e999 parses as inf, which json.dumps would forward as the non-JSON Infinity.
            raise BadRequestError(f"must be a finite number, got {item}", param=where or None)
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise BadRequestError(f"is nested deeper than {max_depth} levels", param=where or None)
            children = [(child, child_path, depth + 1) for child, child_path in _children(item, where)]
            pending.extend(reversed(children))  # popped in document order: the first problem is named


def _children(container: dict[str, Any] | list[Any], where: str) -> Iterator[tuple[Any, str]]:
    if isinstance(container, list):
        for index, child in enumerate(container):
            yield child, f"{where}[{index}]"
        return
    for key, child in container.items():
        # The path goes into the error body: a key that is not valid Unicode is named with escapes.
        name = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
        child_path = f"{where}.{name}" if where else name
        _check_text(str(key), child_path)
        yield child, child_path


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequestError(
            f"contains a lone surrogate (U+{ord(text[exc.start]):04X}) at character {exc.start}: "
            "text must be valid Unicode",
            param=where or None,
        ) from None
