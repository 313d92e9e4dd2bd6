"""JSON from strangers: bounded nesting, bounded integers, finite numbers.

`json.loads` on hostile text can raise RecursionError (deep nesting), ValueError outside
JSONDecodeError (an integer of more than 4300 digits), or give `inf` (`1e999`). Every such
input is an `InvalidJson` here, which the callers turn into a 400 or an `error` event.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 32  # an offer is 2 deep; a data-channel message 1-2
MAX_NUMBER_CHARS = 40  # no field needs more; int() of huge digit strings is quadratic

# Strings (whose brackets do not count) or brackets; possessive: no backtracking.
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')


class InvalidJson(ValueError):
    pass


def _number(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise InvalidJson("number too long")
    return text


def _int(text: str) -> int:
    return int(_number(text))


def _float(text: str) -> float:
    value = float(_number(text))
    if not math.isfinite(value):
        raise InvalidJson("number out of range")
    return value


def _constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not JSON")


def depth(text: str) -> int:
    deepest = level = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            level += 1
            deepest = max(deepest, level)
        elif token in "]}":
            level -= 1
    return deepest


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse `data`, or raise InvalidJson (never RecursionError, OverflowError, ...)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
        if depth(text) > max_depth:
            raise InvalidJson(f"nested deeper than {max_depth}")
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except InvalidJson:
        raise
    except (ValueError, RecursionError, UnicodeDecodeError, OverflowError) as exc:
        raise InvalidJson(str(exc)[:80] or type(exc).__name__) from None
