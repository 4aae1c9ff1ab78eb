"""Characters that must not reach a name, and file names made safe from whatever a document holds.

Shared by the wire contract (identifiers), the service (upload names, archive entries) and the SDK and
CLI (where a download is written): a stored name may come from a restored or legacy document, a direct
database write or a hostile server, so nothing that turns it into a path trusts it.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

MAX_FILENAME = 255
DOT_NAMES = frozenset({".", ".."})


def is_control(ch: str) -> bool:
    """C0, DEL and C1 controls: invisible in logs and UIs, and some stores drop them."""
    return ord(ch) < 32 or 127 <= ord(ch) <= 159


def is_format(ch: str) -> bool:
    """Unicode format characters (category Cf): right-to-left overrides, zero-width characters, the
    byte-order mark. They change how a name reads without changing what it is."""
    return unicodedata.category(ch) == "Cf"


def is_surrogate(ch: str) -> bool:
    """A lone UTF-16 surrogate (JSON's "\\udc80"): no UTF-8 encoding exists, so no store can hold it."""
    return 0xD800 <= ord(ch) <= 0xDFFF


def is_unsafe(ch: str) -> bool:
    return is_control(ch) or is_surrogate(ch) or is_format(ch)


# The Cf ranges of the Unicode version Python 3.11 ships, written out: finding them means asking
# unicodedata about all 1.1 million code points, ~0.4 s at every start of every flrepo process (each CLI
# call, collector and site). Another version is scanned; tests/code/test_names.py checks this table.
KNOWN_FORMAT_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "14.0.0": (
        (173, 173), (1536, 1541), (1564, 1564), (1757, 1757), (1807, 1807), (2192, 2193), (2274, 2274),
        (6158, 6158), (8203, 8207), (8234, 8238), (8288, 8292), (8294, 8303), (65279, 65279), (65529, 65531),
        (69821, 69821), (69837, 69837), (78896, 78904), (113824, 113827), (119155, 119162), (917505, 917505),
        (917536, 917631),
    ),
}  # fmt: skip


def _format_ranges() -> list[tuple[int, int]]:
    known = KNOWN_FORMAT_RANGES.get(unicodedata.unidata_version)
    return list(known) if known else scan_format_ranges()


def scan_format_ranges() -> list[tuple[int, int]]:
    """The ranges of Unicode format characters (Cf), from unicodedata itself."""
    ranges: list[tuple[int, int]] = []
    start = None
    for code in range(sys.maxunicode + 2):
        inside = code <= sys.maxunicode and unicodedata.category(chr(code)) == "Cf"
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            ranges.append((start, code - 1))
            start = None
    return ranges


def _class_items(ranges: list[tuple[int, int]]) -> str:
    def literal(code: int) -> str:
        # Escaped where a regex would read the character as syntax; literal otherwise, so the
        # pattern works in Python's re and in JSON-schema validators alike.
        ch = chr(code)
        return f"\\x{code:02x}" if code < 0x7F and not ch.isalnum() else ch

    return "".join(literal(a) if a == b else f"{literal(a)}-{literal(b)}" for a, b in ranges)


# The characters no name may hold, as the body of a regex character class: controls, surrogates, Cf.
# For JSON-schema patterns. Surrogates are left out: they cannot be written into the OpenAPI document
# (no UTF-8 form), regex engines such as Rust's refuse them in a class, and no valid JSON string that a
# client encodes holds one; the validators refuse them all the same.
UNSAFE_CLASS = "\\x00-\\x1f\\x7f-\\x9f" + _class_items(_format_ranges())


def safe_filename(name: Any, fallback: str = "download.bin") -> str:
    """A single path component made from `name`, never a path: separators, controls, format
    characters and surrogates become `_`; empty, `.` and `..` become `fallback` (itself made safe).

    Use it for every name that came from a document or a server before it touches a file system."""
    text = unicodedata.normalize("NFC", name) if isinstance(name, str) else ""
    text = "".join("_" if ch in "/\\" or is_unsafe(ch) else ch for ch in text).strip()
    text = text[:MAX_FILENAME]
    if text in DOT_NAMES or not text.strip("."):
        # "...." is a legal name, but a stripped-away dot run is what `..` tricks are made of.
        return safe_filename(fallback, "download.bin") if fallback != name else "download.bin"
    return text
