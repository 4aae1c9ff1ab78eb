"""The task's compression (flrepo.fl.core.compression) carried in the Message API's ArrayRecord.

A compressed tensor is a Flower `Array` of its own type: `stype` "flrepo.<codec>", the codec's bytes
as its data, the tensor's dtype and shape as Flower's fields (the public constructor
`Array(dtype, shape, stype, data)`; Flower sends an Array's bytes as they are, whatever its stype).
A record of plain arrays (`stype` numpy.ndarray, what an older site sends) passes unchanged.

`ServerSide` sits between the task's message strategy and the Grid: it compresses what goes out
(fp16 downlink), rebuilds each site's weights from what comes back before the strategy aggregates,
and counts the bytes each way.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message

from flrepo.fl.core import compression
from flrepo.fl.core.codecs import CodecError
from flrepo.fl.core.compression import TrafficMeter, Weights

log = logging.getLogger(__name__)
STYPE_PREFIX = "flrepo."
ARRAYS = "arrays"


def to_record(codec: str, blobs: list[bytes], like: Weights, keys: list[str] | None = None) -> ArrayRecord:
    """`codec`'s blobs of tensors shaped as `like`, as an ArrayRecord (keys "0", "1", ... unless given)."""
    names = keys or [str(i) for i in range(len(blobs))]
    return ArrayRecord(
        {
            name: Array(dtype=str(np.asarray(w).dtype), shape=tuple(np.shape(w)), stype=STYPE_PREFIX + codec, data=blob)
            for name, blob, w in zip(names, blobs, like, strict=True)
        }
    )


def codec_of(record: ArrayRecord) -> str | None:
    """The codec of a compressed record; None for plain arrays."""
    stypes = {array.stype for array in record.values()}
    if len(stypes) == 1 and next(iter(stypes)).startswith(STYPE_PREFIX):
        return next(iter(stypes)).removeprefix(STYPE_PREFIX)
    return None


def blobs_of(record: ArrayRecord) -> list[bytes]:
    return [array.data for array in record.values()]


def payload(record: ArrayRecord) -> int:
    """The record's bytes as they go on the wire (each Array's data)."""
    return sum(len(array.data) for array in record.values())


def weights_of(record: ArrayRecord) -> tuple[Weights, float]:
    """The weights a record carries, compressed or not; the decoding ms."""
    codec = codec_of(record)
    if codec is None:
        return record.to_numpy_ndarrays(), 0.0
    return compression.received_weights(codec, blobs_of(record))


class ServerSide(TrafficMeter):
    """The collector's half of a task's compression on the Message API (see the module's docstring)."""

    _sent: dict[int, tuple[list[str], Weights]]  # node -> (keys, the weights it decodes)

    def outgoing(self, messages: Iterable[Message]) -> list[Message]:
        """The messages with their arrays as the task's downlink sends them, counted."""
        out = list(messages)
        encoded: dict[int, tuple[ArrayRecord, Weights, int]] = {}  # by record: strategies share one
        for message in out:
            record = message.content.array_records.get(ARRAYS)
            if record is None:
                continue
            if id(record) not in encoded:
                encoded[id(record)] = self._encode(record)
            sent_record, sent, raw = encoded[id(record)]
            encoded[id(sent_record)] = encoded[id(record)]  # messages may share their content
            message.content[ARRAYS] = sent_record
            self._sent[message.metadata.dst_node_id] = (list(record.keys()), sent)
            self.round.bytes_down += payload(sent_record)
            self.round.bytes_down_raw += raw
        return out

    def _encode(self, record: ArrayRecord) -> tuple[ArrayRecord, Weights, int]:
        weights = record.to_numpy_ndarrays()
        raw = compression.plain_size(weights)
        if self.spec.downlink == "none":
            return record, weights, raw
        blobs, sent, ms = compression.downlink(weights, self.spec.downlink)
        self.round.encode_ms += ms
        return to_record(self.spec.downlink, blobs, weights, list(record.keys())), sent, raw

    def incoming(self, replies: Iterable[Message]) -> list[Message]:
        """The replies with each site's weights rebuilt (sent + decoded delta), counted; a reply whose
        delta does not decode is left out (logged: one broken site must not fail the round)."""
        out = []
        for reply in replies:
            if not reply.has_error():
                self._site_metrics(reply)
                record = reply.content.array_records.get(ARRAYS)
                try:
                    if record is not None:
                        self._rebuild(reply, record)
                except CodecError as exc:
                    log.warning("node %s: its update does not decode (%s): left out", reply.metadata.src_node_id, exc)
                    continue
            out.append(reply)
        return out

    def _site_metrics(self, reply: Message) -> None:
        for record in reply.content.metric_records.values():
            values: dict[str, Any] = dict(record)
            self.round.site_metrics(values)
            for name in compression.SITE_METRICS:
                if name in record:
                    del record[name]

    def _rebuild(self, reply: Message, record: ArrayRecord) -> None:
        self.round.bytes_up += payload(record)
        codec = codec_of(record)
        keys, sent = self._sent.get(reply.metadata.src_node_id, ([], []))
        if codec is None:  # plain arrays: an older site, or no uplink compression
            self.round.bytes_up_raw += payload(record)
            return
        weights, ms = compression.apply_delta(sent, codec, blobs_of(record))
        self.round.decode_ms += ms
        self.round.bytes_up_raw += compression.plain_size(weights)
        reply.content[ARRAYS] = ArrayRecord(dict(zip(keys, (Array(w) for w in weights), strict=True)))
