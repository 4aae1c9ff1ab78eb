"""`mongodump --archive` files, written and restored in Python, for tests on machines without mongo-tools.

The format is mongo-tools' own (common/archive): the magic number 0x8199e26d; a prelude of a header
document, one metadata document per collection (its indexes as an extended-JSON string) and a
terminator (int32 -1); then, per collection, a namespace header, its documents as BSON and a
terminator; then, per collection, an EOF namespace header carrying the CRC-64 (ECMA) of its documents'
bytes, and a terminator. `mongodump --archive --gzip` gzips the whole stream.

`main` plays `mongorestore` for the options mongo_db/restore-dump.sh passes (--host, --port,
--archive=, --gzip, --nsExclude=, and --nsFrom=/--nsTo= through FLREPO_RESTORE_ARGS); it writes to the
server named by FAKE_MONGORESTORE_URL, since no mongod listens on 127.0.0.1:27017 here.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import os
import struct
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

import bson
from bson import json_util
from pymongo import MongoClient

MAGIC = 0x8199E26D
TERMINATOR = struct.pack("<i", -1)
_ECMA = 0xC96C5795D7870F42  # CRC-64/ECMA-182, reflected, as Go's crc64.ECMA table


def _crc64_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ _ECMA if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc64_table()


def crc64(data: bytes, crc: int = 0) -> int:
    """Go's crc64.Update(crc, MakeTable(ECMA), data)."""
    crc ^= 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def write_archive(
    out: IO[bytes], namespaces: dict[str, list[dict[str, Any]]], indexes: dict[str, list[dict[str, Any]]]
) -> None:
    """An archive of `namespaces` ({"db.collection": documents}) with their `indexes` (key, name, unique)."""
    out.write(struct.pack("<I", MAGIC))
    header = {"concurrent_collections": 4, "version": "0.1", "server_version": "6.0.0", "tool_version": "100.10.0"}
    out.write(bson.encode(header))
    for namespace, docs in namespaces.items():
        db, collection = namespace.split(".", 1)
        specs = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]
        specs += [{"v": 2, **spec} for spec in indexes.get(namespace, [])]
        metadata = json_util.dumps({"indexes": specs, "collectionName": collection, "type": "collection"})
        entry = {"db": db, "collection": collection, "metadata": metadata, "size": len(docs), "type": "collection"}
        out.write(bson.encode(entry))
    out.write(TERMINATOR)
    crcs = {}
    for namespace, docs in namespaces.items():
        db, collection = namespace.split(".", 1)
        out.write(bson.encode({"db": db, "collection": collection, "EOF": False, "CRC": 0}))
        crc = 0
        for doc in docs:
            raw = bson.encode(doc)
            crc = crc64(raw, crc)
            out.write(raw)
        out.write(TERMINATOR)
        crcs[namespace] = crc
    for namespace, crc in crcs.items():
        db, collection = namespace.split(".", 1)
        out.write(bson.encode({"db": db, "collection": collection, "EOF": True, "CRC": _signed64(crc)}))
        out.write(TERMINATOR)


def _next_bson(stream: IO[bytes]) -> bytes | None:
    """The next BSON document's bytes, or None at a terminator."""
    head = stream.read(4)
    if len(head) < 4:
        raise ValueError("archive ended early")
    if head == TERMINATOR:
        return None
    (size,) = struct.unpack("<i", head)
    body = stream.read(size - 4)
    if len(body) != size - 4:
        raise ValueError("archive ended inside a document")
    return head + body


def read_archive(stream: IO[bytes]) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """(the metadata by namespace, the documents by namespace, the header), every CRC checked."""
    (magic,) = struct.unpack("<I", stream.read(4))
    if magic != MAGIC:
        raise ValueError("not a mongodump archive")
    header_raw = _next_bson(stream)
    assert header_raw is not None
    header = bson.decode(header_raw)
    metadata: dict[str, Any] = {}
    while (raw := _next_bson(stream)) is not None:
        meta = bson.decode(raw)
        metadata[f"{meta['db']}.{meta['collection']}"] = json_util.loads(meta["metadata"])
    docs: dict[str, list[dict[str, Any]]] = {ns: [] for ns in metadata}
    crcs: dict[str, int] = dict.fromkeys(metadata, 0)
    done: set[str] = set()
    while done != set(metadata):
        raw = _next_bson(stream)
        if raw is None:
            raise ValueError("a terminator where a namespace header was expected")
        ns_header = bson.decode(raw)
        namespace = f"{ns_header['db']}.{ns_header['collection']}"
        if ns_header["EOF"]:
            if _signed64(crcs[namespace]) != ns_header["CRC"]:
                raise ValueError(f"{namespace}: archive checksum mismatch")
            done.add(namespace)
            if _next_bson(stream) is not None:
                raise ValueError("no terminator after an EOF header")
            continue
        while (raw := _next_bson(stream)) is not None:
            crcs[namespace] = crc64(raw, crcs[namespace])
            docs[namespace].append(bson.decode(raw))
    return metadata, docs, header


def _options(argv: Iterable[str]) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    args = iter(argv)
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep and name in ("--host", "--port"):
            value = next(args)
        options.setdefault(name, []).append(value)
    return options


def _renamed(namespace: str, pairs: list[tuple[str, str]]) -> str:
    for source, target in pairs:
        if fnmatch.fnmatchcase(namespace, source):
            prefix = source.rstrip("*")
            return target.rstrip("*") + namespace[len(prefix) :]
    return namespace


def main(argv: list[str]) -> int:
    """mongorestore for the options restore-dump.sh uses."""
    options = _options(argv)
    if options.get("--host") != ["127.0.0.1"] or options.get("--port") != ["27017"]:
        sys.stderr.write("fake mongorestore: expected --host 127.0.0.1 --port 27017\n")
        return 2
    unknown = set(options) - {"--host", "--port", "--archive", "--gzip", "--nsExclude", "--nsFrom", "--nsTo"}
    if unknown:
        sys.stderr.write(f"fake mongorestore: unsupported options {sorted(unknown)}\n")
        return 2
    [path] = options["--archive"]
    with open(path, "rb") as raw:
        data = raw.read()
    stream: IO[bytes] = io.BytesIO(gzip.decompress(data) if "--gzip" in options else data)
    metadata, docs, _ = read_archive(stream)
    pairs = list(zip(options.get("--nsFrom", []), options.get("--nsTo", []), strict=True))
    with MongoClient(os.environ["FAKE_MONGORESTORE_URL"]) as client:
        for namespace, documents in docs.items():
            if any(fnmatch.fnmatchcase(namespace, pattern) for pattern in options.get("--nsExclude", [])):
                continue
            db, collection = _renamed(namespace, pairs).split(".", 1)
            target = client[db][collection]
            for spec in metadata[namespace]["indexes"]:
                if spec["name"] != "_id_":
                    target.create_index(list(spec["key"].items()), name=spec["name"], unique=spec.get("unique", False))
            if documents:
                target.insert_many(documents, ordered=True)
            sys.stderr.write(f"restoring {namespace} to {db}.{collection}: {len(documents)} documents\n")
    return 0


def dump_databases(url: str, names: dict[str, str]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Every collection of the databases `names` ({name in the dump: name on the server}), as namespaces."""
    with MongoClient(url) as client:
        for dumped, actual in names.items():
            for collection in sorted(client[actual].list_collection_names()):
                yield f"{dumped}.{collection}", list(client[actual][collection].find().sort("_id", 1))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
