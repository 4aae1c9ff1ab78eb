"""Input rules shared by every schema: identifiers and user-supplied document keys.

aerOS accepted anything; these rules keep names usable in URL paths and keep user data from
being read as MongoDB operators (`$set`) or dotted paths (`a.b`) in queries and updates.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints, WithJsonSchema

from flrepo.names import DOT_NAMES, UNSAFE_CLASS, is_control, is_format, is_surrogate, is_unsafe

MAX_IDENTIFIER = 128
MAX_KEY = 256
MAX_DEPTH = 16


def _has_control(value: str) -> bool:
    return any(is_control(ch) or is_surrogate(ch) for ch in value)


def check_identifier(value: str) -> str:
    """The identifier in NFC (so two spellings of one name name one item), or ValueError."""
    if any(is_surrogate(ch) for ch in value):
        raise ValueError("must be valid Unicode (no lone surrogates)")
    value = unicodedata.normalize("NFC", value)
    if value in DOT_NAMES:
        # Names become path components (archive entries, download names): `.` and `..` would escape.
        raise ValueError("must not be '.' or '..'")
    if "/" in value:
        raise ValueError("must not contain '/'")
    if value.startswith("$"):
        raise ValueError("must not start with '$'")
    if _has_control(value):
        raise ValueError("must not contain NUL or control characters")
    if any(is_format(ch) for ch in value):
        # Right-to-left overrides, zero-width characters and byte-order marks make a name read as another.
        raise ValueError("must not contain invisible format characters (Unicode category Cf)")
    return value


# The same rules as JSON-schema patterns, so clients and fuzzers see them in the OpenAPI document.
# Without look-ahead (not every validator has it): a first `.` must be followed by a non-dot, `..` by anything.
_ID_CHAR = f"[^/{UNSAFE_CLASS}]"
IDENTIFIER_PATTERN = f"^(?:[^$./{UNSAFE_CLASS}]{_ID_CHAR}*|\\.[^./{UNSAFE_CLASS}]{_ID_CHAR}*|\\.\\.{_ID_CHAR}+)$"
KEY_PATTERN = f"^[^$.{UNSAFE_CLASS}][^.{UNSAFE_CLASS}]*$"

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
            if len(key) > MAX_KEY or any(is_unsafe(ch) for ch in key):
                raise ValueError(f"key {key[:32]!a} is too long or contains control or format characters")
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
