"""Conditional requests (RFC 9110 §13) on stored files, whose ETag is the quoted sha256.

Downloads: `If-None-Match` with the current ETag (or `*`, or a list holding it) answers 304, compared
weakly as the RFC says for that header. Uploads: `If-Match` replaces only the file the client last saw
(strong comparison; `*`: only when there is a file), `If-None-Match: *` only creates (no file yet). The
store checks an upload's condition atomically with the switch (repository.items.attach).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header

from flrepo.server.repository.items import FileCondition

# entity-tag = [ weak ] opaque-tag; opaque-tag = DQUOTE *etagc DQUOTE (RFC 9110 §8.8.3)
_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')
# Tags beyond this many are not read: a client names the few versions it holds, not thousands.
MAX_TAGS = 64


def etag(sha256: str) -> str:
    return f'"{sha256}"'


def parse_tags(header: str) -> tuple[bool, list[tuple[bool, str]]]:
    """(`*` given, [(weak, opaque tag), ...]) of an If-Match / If-None-Match value; malformed
    members are skipped, so a garbled header matches nothing."""
    if header.strip() == "*":
        return True, []
    tags: list[tuple[bool, str]] = []
    position = 0
    while position < len(header) and len(tags) < MAX_TAGS:
        match = _ENTITY_TAG.match(header, position)
        if match is None:
            # Skip one malformed member up to the next comma.
            comma = header.find(",", position)
            if comma < 0:
                break
            position = comma + 1
            continue
        tags.append((match.group(1) is not None, match.group(2)))
        position = match.end()
    return False, tags


def none_match(header: str | None, sha256: str | None) -> bool:
    """True when a GET/HEAD's If-None-Match names the current file: the answer is 304.
    Weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`."""
    if header is None or not sha256:
        return False
    anything, tags = parse_tags(header)
    return anything or any(opaque == sha256 for _, opaque in tags)


async def upload_condition(  # async: no thread-pool hop (flrepo.server.deps)
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='Replace the file only if its current ETag is one of these (`"<sha256>"`); '
            "`*`: only if the item has a file. Otherwise 412.",
        ),
    ] = None,
    if_none_match: Annotated[
        str | None,
        Header(alias="If-None-Match", description="`*`: only if the item has no file yet (412 otherwise)."),
    ] = None,
) -> FileCondition:
    """The precondition of a file upload, from its headers (none: replace whatever is there)."""
    condition = FileCondition()
    if if_match is not None:
        anything, tags = parse_tags(if_match)
        # Strong comparison (§13.1.1): a weak tag never matches, so it is left out.
        condition = FileCondition(
            exists=True if anything else None,
            sha256=None if anything else frozenset(opaque for weak, opaque in tags if not weak),
        )
    if if_none_match is not None:
        anything, tags = parse_tags(if_none_match)
        if anything:
            condition = FileCondition(exists=False, sha256=condition.sha256)
        elif tags:
            condition = FileCondition(
                exists=condition.exists,
                sha256=condition.sha256,
                not_sha256=frozenset(opaque for _, opaque in tags),
            )
    return condition


UploadCondition = Annotated[FileCondition, Depends(upload_condition)]
