"""A message's arrays as one Flower object on the wire, between flrepo's ServerApp and ClientApp.

Flower 1.42 moves a message as a tree of objects, each its own HTTP request on every hop
(ServerApp → SuperLink → SuperNode → ClientApp and back): the message, its RecordDict, each
record, and for every array an `Array` and its `ArrayChunk`s. A four-layer MLP's training message
is 12 objects and its reply 11; each costs a request to push and one to pull, on each of the two
links, and at 20-30 ms of a busy machine's cores per request that was most of a small model's
round (bench/RESULTS.md, "issue #20").

`pack` moves all of a message's array records into one blob: a header (each record, empty ones
too, and its arrays' key, dtype, shape, stype and length, as JSON) followed by the arrays' own serialized bytes. Up to
Flower's own per-object bound (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE, 5 MB) the blob is a bytes
value of one ConfigRecord: the training message above becomes 4 objects. Up to MAX_PACKED_BYTES
it is one Array (Flower chunks it); above that the bytes, not the request count, are the cost,
and the records stay as they are. `unpack` gives back the very same Arrays, bit for bit: the
strategy, the compression codecs, DP and SecAgg+ see what they would have seen.

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

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE

PACKED_KEY = "flrepo-packed"
PACKED_STYPE = "flrepo.packed.v1"
INLINE_MAX_BYTES = FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
MAX_PACKED_BYTES = 32 * 1024 * 1024
_LENGTH = struct.Struct(">I")


def blob_of(records: dict[str, ArrayRecord]) -> bytes:
    """The records' arrays as one blob: header length, JSON header (each record by name, empty ones
    too, with its arrays' key, dtype, shape, stype and length), then the arrays' bytes in order."""
    header = json.dumps(
        [
            [name, [[key, a.dtype, list(a.shape), a.stype, len(a.data)] for key, a in record.items()]]
            for name, record in records.items()
        ]
    ).encode()
    return b"".join(
        [_LENGTH.pack(len(header)), header, *(array.data for record in records.values() for array in record.values())]
    )


def records_of(blob: bytes) -> dict[str, ArrayRecord]:
    """The array records `blob_of` packed, in their order."""
    data = memoryview(blob)
    (length,) = _LENGTH.unpack_from(data)
    header: list[list[Any]] = json.loads(bytes(data[_LENGTH.size : _LENGTH.size + length]))
    offset = _LENGTH.size + length
    records: dict[str, ArrayRecord] = {}
    for name, entries in header:
        record = records[str(name)] = ArrayRecord()
        for key, dtype, shape, stype, size in entries:
            end = offset + int(size)
            if end > len(data):
                raise ValueError("a packed message is shorter than its header says")
            shape = tuple(int(n) for n in shape)
            record[str(key)] = Array(dtype=str(dtype), shape=shape, stype=str(stype), data=bytes(data[offset:end]))
            offset = end
    return records


def pack(message: Message) -> None:
    """Move the message's array records into one packed record, in place (see the module's doc)."""
    if not message.has_content():
        return
    content = message.content
    records = dict(content.array_records.items())
    arrays = sum(len(record) for record in records.values())
    size = sum(len(array.data) for record in records.values() for array in record.values())
    inline = size < INLINE_MAX_BYTES - 4096  # the header is a few bytes per array
    if not records or size > MAX_PACKED_BYTES or (not inline and arrays < 2):
        return  # nothing to save: one array is one Array either way
    blob = blob_of(records)
    for name in records:
        del content[name]
    if len(blob) <= INLINE_MAX_BYTES:
        content[PACKED_KEY] = ConfigRecord({"blob": blob})
    else:
        content[PACKED_KEY] = ArrayRecord(
            {"blob": Array(dtype="uint8", shape=(len(blob),), stype=PACKED_STYPE, data=blob)}
        )


def unpack(message: Message) -> bool:
    """Put back the array records `pack` moved, in place; True if the message was packed."""
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
