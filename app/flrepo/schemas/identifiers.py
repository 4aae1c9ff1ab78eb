"""Input rules shared by every schema: identifiers and user-supplied document keys.

aerOS accepted anything; these rules keep names usable in URL paths and keep user data from
being read as MongoDB operators (`$set`) or dotted paths (`a.b`) in queries and updates.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints, WithJsonSchema

MAX_IDENTIFIER = 128
MAX_KEY = 256
MAX_DEPTH = 16


def _has_control(value: str) -> bool:
    # C0, DEL and C1 controls: invisible in logs and UIs, and some stores drop them.
    return any(ord(ch) < 32 or 127 <= ord(ch) <= 159 for ch in value)


def check_identifier(value: str) -> str:
    if "/" in value:
        raise ValueError("must not contain '/'")
    if value.startswith("$"):
        raise ValueError("must not start with '$'")
    if _has_control(value):
        raise ValueError("must not contain NUL or control characters")
    return value


# The same rules as a JSON-schema pattern, so clients and fuzzers see them in the OpenAPI document.
IDENTIFIER_PATTERN = r"^[^$/\x00-\x1f\x7f-\x9f][^/\x00-\x1f\x7f-\x9f]*$"
KEY_PATTERN = r"^[^$.\x00-\x1f\x7f-\x9f][^.\x00-\x1f\x7f-\x9f]*$"

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_IDENTIFIER),
    AfterValidator(check_identifier),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_IDENTIFIER, "pattern": IDENTIFIER_PATTERN}),
]


def check_keys(value: Any, depth: int = 0) -> Any:
    """Reject keys MongoDB would treat as operators or paths, and unbounded nesting."""
    if depth > MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise ValueError("keys must be non-empty strings")
            if key.startswith("$") or "." in key:
                raise ValueError(f"key {key!r} must not start with '$' or contain '.'")
            if len(key) > MAX_KEY or _has_control(key):
                raise ValueError(f"key {key[:32]!r} is too long or contains control characters")
            check_keys(item, depth + 1)
    elif isinstance(value, list):
        # Arrays of arrays are valid here; a store that cannot hold them says so (storage/dialect.py).
        for item in value:
            check_keys(item, depth + 1)
    return value


SafeDict = Annotated[
    dict[str, Any],
    AfterValidator(check_keys),
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": KEY_PATTERN, "maxLength": MAX_KEY},
            "additionalProperties": True,
        }
    ),
]
