"""Adopting an unsigned strategy or transformation: an administrator looks at what an item is, then signs
it with the publisher's key, so collectors and local executions load it without `--allow-unsigned`.

aerOS 1.1.0 stored strategies and transformations as plain pickles without signatures; a database it
wrote (or an upload from one of its clients) holds such items. Nothing here unpickles: what a pickle is
comes from its opcodes (the classes and functions it would import), and the signature covers the exact
bytes shown (their sha256 and size, as downloaded and checked against the repository's ETag).
"""

from __future__ import annotations

import hashlib
import io
import pickletools
from dataclasses import dataclass, field
from typing import Any

from flrepo.client.artifacts import Kind, file_path, get_call, signed_meta_call
from flrepo.client.sync import RepositoryClient
from flrepo.signing import sign_digest

# Helpers pickle and cloudpickle name while rebuilding an object: never the object's own class.
REBUILDERS = ("copyreg.", "copy_reg.", "cloudpickle.", "builtins.getattr", "_codecs.encode", "__builtin__.")
_STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_PUTS = {"BINPUT", "LONG_BINPUT", "PUT"}
_GETS = {"BINGET", "LONG_BINGET", "GET"}


@dataclass
class Candidate:
    """What an administrator is shown before signing an item."""

    kind: Kind
    name: str
    size: int
    sha256: str
    imports: list[str] = field(default_factory=list)  # every class or function the pickle would import
    signed_by: str | None = None  # the key id of a signature the item already carries

    @property
    def object_class(self) -> str:
        """The class of the pickled object (the first import that is not a pickling helper)."""
        return next((name for name in self.imports if not name.startswith(REBUILDERS)), "unknown")

    def describe(self) -> str:
        lines = [
            f"{self.kind} {self.name!r}",
            f"  class:   {self.object_class}",
            f"  size:    {self.size} bytes",
            f"  sha256:  {self.sha256}",
            f"  imports: {', '.join(self.imports) or 'nothing'}",
            f"  signed:  {'by key ' + repr(self.signed_by) if self.signed_by else 'no'}",
        ]
        return "\n".join(lines)


def pickle_imports(data: bytes) -> list[str]:
    """The `module.name` of every global a pickle would import, in order, read from its opcodes only;
    ValueError when the data is no pickle."""
    found: list[str] = []
    recent: list[Any] = []  # the values last pushed, enough to resolve STACK_GLOBAL
    memo: dict[Any, Any] = {}
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(data)):
            if op.name in _STRINGS:
                recent.append(arg)
            elif op.name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif op.name in _PUTS:
                memo[arg] = recent[-1] if recent else None
            elif op.name in _GETS:
                recent.append(memo.get(arg))
            elif op.name == "GLOBAL":
                found.append(str(arg).replace(" ", ".", 1))
            elif op.name == "STACK_GLOBAL" and len(recent) >= 2:
                found.append(f"{recent[-2]}.{recent[-1]}")
    except Exception as exc:  # pickletools raises ValueError and others on damaged data
        raise ValueError(f"not a pickle: {exc}") from None
    return list(dict.fromkeys(found))


def inspect(repo: RepositoryClient, kind: Kind, name: str) -> Candidate:
    """Download the item's file (checked against the repository's ETag) and describe it."""
    item = repo.send(get_call(kind, name))
    buffer = io.BytesIO()
    repo.download(file_path(kind, name), buffer)
    data = buffer.getvalue()
    meta = item.meta or {}
    return Candidate(
        kind=kind,
        name=name,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        imports=pickle_imports(data),
        signed_by=meta.get("key_id") if meta.get("signature") else None,
    )


def adopt(repo: RepositoryClient, candidate: Candidate) -> dict[str, Any]:
    """Sign exactly the bytes `candidate` describes with the publisher's key and store the signature in
    the item's `meta`; the signature fields. The file is not uploaded again, so a file replaced since
    `inspect` no longer matches the signature and is refused by every loader."""
    repo.keyring.require_signing(f"adopting {candidate.kind} {candidate.name!r}")
    fields = sign_digest(repo.keyring, candidate.kind, candidate.name, candidate.sha256, candidate.size)
    current = repo.send(get_call(candidate.kind, candidate.name))
    repo.send(signed_meta_call(candidate.kind, candidate.name, current, fields))
    return fields


__all__ = ["Candidate", "Kind", "adopt", "inspect", "pickle_imports"]
