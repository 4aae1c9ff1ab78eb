"""JSON request bodies are parsed strictly: what no store can hold is invalid input (422), found before
any model, database or response encoder sees it.

Python's `json` accepts `NaN` and `Infinity`, integers of any size (and raises a plain ValueError past
4,300 digits), `1e400` (as infinity) and lone surrogates (`"\\udc80"`, which no UTF-8 encoder can write).
Each of those used to end in a 500, a 503 or a dropped connection further down. Here they raise
`json.JSONDecodeError`, which FastAPI answers with a 422 `json_invalid` error.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from fastapi import Request

# BSON's integers are 64-bit signed; anything wider cannot be stored.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Digits beyond this are out of range anyway; checked before int() so no huge conversion ever runs.
MAX_INT_DIGITS = 19
# Deeper than any document the API accepts (16 levels of user data inside a body): refused before
# anything walks it recursively (validation, error messages, the BSON encoder).
MAX_DEPTH = 64
# A lone UTF-16 surrogate (flrepo.names.is_surrogate), found by one scan in C: a status report's
# 2,000-character message took 0.1 ms character by character.
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(ValueError):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"integer with {len(text.lstrip('-'))} digits is outside the 64-bit range")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise _Refused("integer outside the 64-bit range")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {text[:32]} is too large for a 64-bit float")
    return value


def _parse_constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON number")


def _check_strings(value: Any) -> None:
    """Raise _Refused for a lone surrogate anywhere (keys included) or nesting deeper than MAX_DEPTH;
    iterative, as nothing bounds the nesting yet."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise _Refused("string with a lone surrogate (not valid Unicode)")
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def loads(body: bytes | str) -> Any:
    """`json.loads` with the rules above; json.JSONDecodeError for anything refused."""
    doc = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        if isinstance(body, bytes):
            body.decode("utf-8")  # JSON is UTF-8 (RFC 8259): refuse other encodings with a clear message
        value = json.loads(body, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
        _check_strings(value)
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("body is not UTF-8", doc, exc.start) from None
    except _Refused as exc:
        raise json.JSONDecodeError(str(exc), doc, 0) from None
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError(f"nested deeper than {MAX_DEPTH} levels", doc, 0) from None
    except ValueError as exc:  # e.g. Python's own integer-string limit
        raise json.JSONDecodeError(str(exc)[:200], doc, 0) from None
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json
