"""What differs between the stores flrepo runs on, in one place.

MongoDB is the production store. FerretDB v1 on SQLite is the embedded store (`flrepo serve
--embedded`, the tests): it speaks the same wire protocol but refuses arrays nested directly in
arrays, and applies an update as a read followed by a separate write, so two concurrent
compare-and-swap updates of one document in one process can both succeed. Which store answers is
read from `buildInfo` once the database is first reached (FerretDB adds `ferretdbVersion`); how
GridFS chunks are read fast is measured then too, with `explain` (flrepo.server.storage.probe), not
assumed from the name: a FerretDB with or without tools/ferretdb's pushdown patch differ there.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from flrepo.server.storage.errors import Invalid


class ChunkReads(StrEnum):
    """How a file's chunks are read with bounded memory at the store's speed."""

    # One query sorted by n: the store walks its (files_id, n) index and streams (MongoDB).
    RANGE = "range"
    # Look-ups of a few chunks by key, each served by the index; the store would sort a range query in
    # memory before sending a byte (FerretDB with tools/ferretdb's pushdown patch).
    KEYS = "keys"
    # One unsorted query, put in order here: the store uses no index, so every query reads the whole
    # collection and one pass is the least it can cost (FerretDB as released).
    SCAN = "scan"


@dataclass
class Dialect:
    """The rules of one kind of store; `MONGODB` unless `buildInfo` says otherwise."""

    name: str
    nested_arrays: bool
    # Updates are atomic per document: compare-and-swap needs no lock of ours.
    atomic_updates: bool
    # `distinct` is answered from an index; else it reads (and decodes) every document.
    indexed_distinct: bool
    # A sorted range query streams its results; else the store sorts the whole range in memory first.
    streams_sorted_reads: bool
    # `$push` honours `$slice` (FerretDB v1 ignores it and keeps every element).
    capped_push: bool
    chunk_reads: ChunkReads = ChunkReads.RANGE
    # Chunks per KEYS look-up (`{files_id, n: {$in: [...]}}`; 1: `{files_id, n}`, where `$in` is not
    # served by the index).
    key_batch: int = 1
    _locks: weakref.WeakValueDictionary[Hashable, asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary, repr=False, compare=False
    )

    @classmethod
    def from_build_info(cls, info: dict[str, Any]) -> Dialect:
        # Every rule below is MongoDB's unless FerretDB answers (v1 on SQLite differs in all of them).
        ferret = "ferretdbVersion" in info or "ferretdb" in info
        return cls(
            "ferretdb" if ferret else "mongodb",
            nested_arrays=not ferret,
            atomic_updates=not ferret,
            indexed_distinct=not ferret,
            streams_sorted_reads=not ferret,
            capped_push=not ferret,
        )

    def measured(self, chunk_reads: ChunkReads, key_batch: int, streams_sorted_reads: bool) -> Dialect:
        """This dialect with what `explain` showed at first contact."""
        return replace(self, chunk_reads=chunk_reads, key_batch=key_batch, streams_sorted_reads=streams_sorted_reads)

    def check_document(self, doc: Any) -> None:
        """Raise Invalid for a value this store cannot hold (before anything is written)."""
        if not self.nested_arrays and _has_nested_array(doc):
            raise Invalid(
                "arrays directly inside arrays are not supported by this store (FerretDB); "
                "wrap the inner array in an object"
            )

    @contextlib.asynccontextmanager
    async def item_lock(self, ident: Hashable) -> AsyncIterator[None]:
        """Serialise "read the document, switch it, delete what it pointed at" for one item.

        Only where updates are not atomic: there, a per-process lock is what keeps two
        replacements from both seeing the same old file (the embedded store runs as one process).
        """
        if self.atomic_updates:
            yield
            return
        lock = self._locks.get(ident)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[ident] = lock
        async with lock:
            yield


def _has_nested_array(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_nested_array(item) for item in value.values())
    if isinstance(value, list):
        return any(isinstance(item, list) or _has_nested_array(item) for item in value)
    return False
