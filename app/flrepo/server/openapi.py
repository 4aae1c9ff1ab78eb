"""What the generated OpenAPI document does not say by itself: the response headers every answer and
every list carries, and names described once, in words, instead of a regex under every field.

The identifier and key rules stay machine-readable: their JSON-schema patterns move into two named
schemas (`Identifier`, `Key`) that every name field references, so validators and fuzzers
(schemathesis) still see them while Swagger UI and ReDoc show a sentence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from flrepo.schemas.identifiers import IDENTIFIER_PATTERN, KEY_PATTERN, MAX_IDENTIFIER, MAX_KEY
from flrepo.server.deps import BODY_TOO_LARGE_EXAMPLE, problem_document

IDENTIFIER_DESCRIPTION = (
    f"A name: 1 to {MAX_IDENTIFIER} characters, any language; not `.` or `..`; no `/`; not starting with `$`; "
    "no control characters and no invisible format characters (Unicode category Cf, e.g. right-to-left "
    "overrides, zero-width spaces). Names are compared in Unicode NFC."
)
KEY_DESCRIPTION = (
    f"A key of user data: 1 to {MAX_KEY} characters; not starting with `$`; no `.`; "
    "no control characters and no invisible format characters (Unicode category Cf)."
)
NAMED_PATTERNS = {
    IDENTIFIER_PATTERN: (
        "Identifier",
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDENTIFIER,
            "pattern": IDENTIFIER_PATTERN,
            "description": IDENTIFIER_DESCRIPTION,
        },
    ),
    KEY_PATTERN: (
        "Key",
        {"type": "string", "maxLength": MAX_KEY, "pattern": KEY_PATTERN, "description": KEY_DESCRIPTION},
    ),
}

REQUEST_ID_HEADER = {
    "description": "The request's id (the client's `X-Request-ID` when valid, else a new one); in every log line",
    "schema": {"type": "string"},
}
TOTAL_COUNT_HEADER = {
    "description": "How many items match the query, over all pages",
    "schema": {"type": "integer", "minimum": 0},
}

# The request headers a file download honours (read by flrepo.server.http.downloads, not by FastAPI).
DOWNLOAD_PARAMETERS = [
    {
        "name": "Range",
        "in": "header",
        "required": False,
        "description": "One range, `bytes=first-last`, `bytes=first-` or `bytes=-suffix` (206, or 416 beyond the end)",
        "schema": {"type": "string"},
    },
    {
        "name": "If-Range",
        "in": "header",
        "required": False,
        "description": "Serve the Range only while the file's ETag is still this one, else the whole file",
        "schema": {"type": "string"},
    },
    {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "ETags the client holds (or `*`): 304 without a body when one is the current file's",
        "schema": {"type": "string"},
    },
]


def install(app: FastAPI) -> None:
    """Make `app.openapi()` return the completed document (built once, then cached as FastAPI does)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if "206" in operation.get("responses", {}):
                _add_parameters(operation, DOWNLOAD_PARAMETERS)
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                # Every JSON body passes the body limit first (FLREPO_MAX_BODY_BYTES): 413 above it.
                operation["responses"].setdefault("413", problem_document(413, BODY_TOO_LARGE_EXAMPLE))
            for status, response in operation.get("responses", {}).items():
                headers = response.setdefault("headers", {})
                headers.setdefault("X-Request-ID", REQUEST_ID_HEADER)
                if status == "200" and _is_list(response):
                    headers.setdefault("X-Total-Count", TOTAL_COUNT_HEADER)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    used = _name_patterns(document)
    for pattern, (name, schema) in NAMED_PATTERNS.items():
        if pattern in used:
            schemas[name] = schema


def _add_parameters(operation: dict[str, Any], parameters: list[dict[str, Any]]) -> None:
    present = {(p.get("name", "").lower(), p.get("in")) for p in operation.get("parameters", [])}
    for parameter in parameters:
        if (parameter["name"].lower(), parameter["in"]) not in present:
            operation.setdefault("parameters", []).append(parameter)


def _is_list(response: dict[str, Any]) -> bool:
    # Every list answer is a page (flrepo.server.deps.listed), with its total in X-Total-Count.
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("type") == "array"


def _name_patterns(node: Any, used: set[str] | None = None) -> set[str]:
    """Replace every inline identifier/key schema with a reference to its named schema (keeping a
    field's own description); return the patterns replaced."""
    used = set() if used is None else used
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict) and value.get("pattern") in NAMED_PATTERNS:
                pattern = value["pattern"]
                name, named = NAMED_PATTERNS[pattern]
                reference: dict[str, Any] = {"$ref": f"#/components/schemas/{name}"}
                if value.get("description") not in (None, named["description"]):
                    reference["description"] = value["description"]
                node[key] = reference
                used.add(pattern)
            else:
                _name_patterns(value, used)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if isinstance(value, dict) and value.get("pattern") in NAMED_PATTERNS:
                wrapper = {"item": value}
                _name_patterns(wrapper, used)
                node[index] = wrapper["item"]
            else:
                _name_patterns(value, used)
    return used
