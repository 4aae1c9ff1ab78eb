"""A message's records as one Flower object on the wire, between flrepo's ServerApp and ClientApp.

Flower 1.42 moves a message as a tree of objects, each its own HTTP request on every hop
(ServerApp → SuperLink → SuperNode → ClientApp and back): the message, its RecordDict, each
record, and for every array an `Array` and its `ArrayChunk`s. A four-layer MLP's training message
is 12 objects and its reply 11; each costs a request to push and one to pull, on each of the two
links, and at 20-30 ms of a busy machine's cores per request that was most of a small model's
round (bench/RESULTS.md, "issue #20").

`pack` moves a message's records into one blob: a JSON header naming each record (empty ones too)
and, for an array record, each array's key, dtype, shape, stype and length; then the arrays' own
bytes, and for a config or metric record Flower's own serialization of it. When the blob fits
Flower's own per-object bound (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE, 5 MB) it is the bytes value of
the message's only record, a ConfigRecord: the training message above becomes 3 objects, its reply 3.
Up to MAX_PACKED_BYTES the array records alone become one Array (Flower chunks it); above that the
bytes, not the request count, are the cost, and the records stay as they are. `unpack` gives back
the very same records, bit for bit: the strategy, the compression codecs, DP and SecAgg+ see what
they would have seen.

The ServerApp packs what it sends through flrepo's Grid (flrepo.fl.message.fast_grid) and unpacks
what it pulls; the ClientApp's outermost mod (`packed_transport`) unpacks what it receives and
packs its reply only when what it received was packed, so a ServerApp that does not pack (Flower's
own runtime, FLREPO_FLOWER_STOCK=1) gets plain replies.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE

PACKED_KEY = "flrepo-packed"
PACKED_STYPE = "flrepo.packed.v1"
INLINE_MAX_BYTES = FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
MAX_PACKED_BYTES = 32 * 1024 * 1024
_LENGTH = struct.Struct(">I")


Record = ArrayRecord | ConfigRecord | MetricRecord


def blob_of(records: dict[str, Record]) -> bytes:
    """The records as one blob: header length, JSON header, then each record's bytes in order. An
    array record is listed with its arrays' key, dtype, shape, stype and length (empty records too) and
    carries the arrays' own bytes; a config or metric record carries Flower's own serialization of it
    (`deflate`, given back exactly by `inflate`)."""
    header: list[list[Any]] = []
    parts: list[bytes] = []
    for name, record in records.items():
        if isinstance(record, ArrayRecord):
            header.append(["a", name, [[k, a.dtype, list(a.shape), a.stype, len(a.data)] for k, a in record.items()]])
            parts.extend(array.data for array in record.values())
        else:
            body = record.deflate()
            header.append(["c" if isinstance(record, ConfigRecord) else "m", name, len(body)])
            parts.append(body)
    head = json.dumps(header).encode()
    return b"".join([_LENGTH.pack(len(head)), head, *parts])


def records_of(blob: bytes) -> dict[str, Record]:
    """The records `blob_of` packed, in their order."""
    data = memoryview(blob)
    (length,) = _LENGTH.unpack_from(data)
    header: list[list[Any]] = json.loads(bytes(data[_LENGTH.size : _LENGTH.size + length]))
    offset = _LENGTH.size + length

    def take(size: int) -> bytes:
        nonlocal offset
        if offset + size > len(data):
            raise ValueError("a packed message is shorter than its header says")
        offset += size
        return bytes(data[offset - size : offset])

    records: dict[str, Record] = {}
    for kind, name, entries in header:
        if kind == "a":
            record = records[str(name)] = ArrayRecord()
            for key, dtype, shape, stype, size in entries:
                shape = tuple(int(n) for n in shape)
                record[str(key)] = Array(dtype=str(dtype), shape=shape, stype=str(stype), data=take(int(size)))
        else:
            records[str(name)] = (ConfigRecord if kind == "c" else MetricRecord).inflate(take(int(entries)))
    return records


def pack(message: Message) -> None:
    """Pack the message's records, in place (see the module's doc): all of them into one ConfigRecord when
    they fit Flower's per-object bound, else its array records into one Array up to MAX_PACKED_BYTES."""
    if not message.has_content():
        return
    content = message.content
    records: dict[str, Record] = dict(content.items())
    arrays = {name: r for name, r in records.items() if isinstance(r, ArrayRecord)}
    count = sum(len(record) for record in arrays.values())
    size = sum(len(array.data) for record in arrays.values() for array in record.values())
    if not arrays or size > MAX_PACKED_BYTES:
        return  # nothing to pack, or the bytes, not the requests, are the cost
    if size < INLINE_MAX_BYTES:
        blob = blob_of(records)
        if len(blob) <= INLINE_MAX_BYTES:
            for name in records:
                del content[name]
            content[PACKED_KEY] = ConfigRecord({"blob": blob})
            return
    if count < 2:
        return  # one array is one Array either way
    blob = blob_of(dict(arrays))
    for name in arrays:
        del content[name]
    content[PACKED_KEY] = ArrayRecord({"blob": Array(dtype="uint8", shape=(len(blob),), stype=PACKED_STYPE, data=blob)})


def unpack(message: Message) -> bool:
    """Put back the records `pack` moved, in place; True if the message was packed."""
    if not message.has_content():
        return False
    content: RecordDict = message.content
    if PACKED_KEY in content.config_records:
        blob = content.config_records[PACKED_KEY]["blob"]
    elif PACKED_KEY in content.array_records and content.array_records[PACKED_KEY]["blob"].stype == PACKED_STYPE:
        blob = content.array_records[PACKED_KEY]["blob"].data
    else:
        return False
    if not isinstance(blob, bytes):
        raise ValueError("a packed message's blob is not bytes")
    del content[PACKED_KEY]
    for name, record in records_of(blob).items():
        content[name] = record
    return True


def packed_transport(message: Message, context: Context, call_next: Callable[[Message, Context], Message]) -> Message:
    """The ClientApp's outermost mod: the app and its other mods see plain records; the reply goes
    back packed when the message came packed."""
    packed = unpack(message)
    reply = call_next(message, context)
    if packed:
        pack(reply)
    return reply
