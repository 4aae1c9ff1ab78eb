"""A message's records packed into one Flower object between flrepo's ServerApp and ClientApp:
bit for bit the same records after the trip, fewer objects on the wire, and plain replies to a
ServerApp that does not pack."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, Metadata, MetricRecord, RecordDict
from flwr.app.message import make_message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from flrepo.fl.message import fast_grid, packing
from flrepo.fl.message.polling import Backoff

from .test_fast_runtime import SlowReplies


def layers() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.standard_normal((64, 32)).astype(np.float32),
        rng.standard_normal(32).astype(np.float32),
        rng.integers(-(2**40), 2**40, (10, 32), dtype=np.int64),
        rng.standard_normal(10).astype(np.float16),
        np.array(3.5),  # a 0-d array keeps its empty shape
    ]


def content() -> RecordDict:
    return RecordDict(
        {
            "arrays": ArrayRecord(layers()),
            "residual": ArrayRecord({"only": Array(np.arange(5, dtype=np.int8))}),
            "fitres.parameters": ArrayRecord(),  # an empty record stays (SecAgg+'s replies have one)
            "config": ConfigRecord({"lr": 0.1, "server-round": 2, "key": b"\x00\x01", "ids": [1, 2], "on": True}),
            "metrics": MetricRecord({"loss": 0.5}),
        }
    )


def as_message(records: RecordDict, node: int = 1, reply_to: str = "") -> Message:
    metadata = Metadata(
        run_id=1, message_id="", src_node_id=0, dst_node_id=node, reply_to_message_id=reply_to, group_id="1",
        created_at=time.time(), ttl=60.0, message_type="train",
    )  # fmt: skip
    return make_message(metadata=metadata, content=records)


def arrays_of(records: RecordDict) -> dict[str, list[tuple[str, str, tuple[int, ...], str, bytes]]]:
    return {
        name: [(key, a.dtype, tuple(a.shape), a.stype, a.data) for key, a in record.items()]
        for name, record in records.array_records.items()
    }


def test_packing_moves_every_record_into_one_config_record_and_unpacking_gives_them_back_bit_for_bit():
    message = as_message(content())
    before = arrays_of(message.content)
    objects_before = len(get_all_nested_objects(message.content))

    order = list(message.content.keys())
    packing.pack(message)
    assert list(message.content.keys()) == [packing.PACKED_KEY]  # every record in the one ConfigRecord
    assert len(get_all_nested_objects(message.content)) == 2 < objects_before  # RecordDict + ConfigRecord

    assert packing.unpack(message) is True
    assert arrays_of(message.content) == before
    assert list(message.content.keys()) == order
    assert dict(message.content.config_records["config"]) == dict(content().config_records["config"])
    assert dict(message.content.metric_records["metrics"]) == {"loss": 0.5}
    unpacked = message.content.array_records["arrays"].to_numpy_ndarrays()
    for got, want in zip(unpacked, layers(), strict=True):
        assert got.dtype == want.dtype and np.array_equal(got, want)


def test_a_blob_above_flowers_object_bound_travels_as_one_chunked_array_and_a_huge_one_as_it_was(monkeypatch):
    monkeypatch.setattr(packing, "INLINE_MAX_BYTES", 1024)
    message = as_message(content())
    before = arrays_of(message.content)
    packing.pack(message)
    assert list(message.content.array_records.keys()) == [packing.PACKED_KEY]
    assert message.content.array_records[packing.PACKED_KEY]["blob"].stype == packing.PACKED_STYPE
    assert packing.unpack(message) is True
    assert arrays_of(message.content) == before

    monkeypatch.setattr(packing, "MAX_PACKED_BYTES", 1024)
    message = as_message(content())
    packing.pack(message)
    assert arrays_of(message.content) == before  # left to Flower's own chunking
    assert packing.unpack(message) is False


def test_a_message_without_arrays_or_content_is_left_as_it_is():
    message = as_message(RecordDict({"metrics": MetricRecord({"accuracy": 0.9})}))
    packing.pack(message)
    assert list(message.content.keys()) == ["metrics"]
    assert packing.unpack(message) is False


def test_a_truncated_blob_is_refused():
    message = as_message(content())
    packing.pack(message)
    blob = message.content.config_records[packing.PACKED_KEY]["blob"]
    message.content.config_records[packing.PACKED_KEY]["blob"] = blob[:-10]
    with pytest.raises(ValueError, match="shorter than its header"):
        packing.unpack(message)


def app_that_echoes(seen: list[RecordDict]):
    def call_next(message: Message, context: Context) -> Message:
        seen.append(message.content)
        return Message(
            RecordDict({"arrays": message.content.array_records["arrays"], "m": MetricRecord({"n": 1})}),
            reply_to=message,
        )

    return call_next


def test_the_clientapps_mod_unpacks_for_the_app_and_packs_the_reply_only_when_the_message_came_packed():
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    packed = as_message(content())
    packing.pack(packed)
    seen: list[RecordDict] = []
    reply = packing.packed_transport(packed, context, app_that_echoes(seen))
    assert arrays_of(seen[0])["arrays"] == arrays_of(content())["arrays"]  # the app saw plain records
    assert packing.PACKED_KEY in reply.content.config_records
    packing.unpack(reply)
    assert arrays_of(reply.content)["arrays"] == arrays_of(content())["arrays"]

    plain = as_message(content())  # from a ServerApp that does not pack (Flower's runtime as shipped)
    reply = packing.packed_transport(plain, context, app_that_echoes(seen))
    assert list(reply.content.array_records.keys()) == ["arrays"]
    assert packing.PACKED_KEY not in reply.content.config_records


class EchoingSites(SlowReplies):
    """Replies at once with what each site received, packed as flrepo's ClientApp packs it."""

    def __init__(self, nodes: Iterable[int]) -> None:
        super().__init__({node: 1 for node in nodes})

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        return [
            as_message(RecordDict(dict(self.sent[i].content.items())), self.sent[i].metadata.dst_node_id, i)
            for i in message_ids
        ]


def test_flrepos_grid_packs_what_the_serverapp_sends_and_unpacks_what_it_pulls():
    sites = EchoingSites([1, 2])
    grid = fast_grid.FastGrid(sites, Backoff(0.001, 1.0, 0.001))
    replies = list(grid.send_and_receive([as_message(content(), node) for node in (1, 2)]))
    assert all(packing.PACKED_KEY in sent.content.config_records for sent in sites.sent.values())  # on the wire
    assert all(not sent.content.array_records for sent in sites.sent.values())
    assert [arrays_of(reply.content) for reply in replies] == [arrays_of(content())] * 2  # to the strategy
