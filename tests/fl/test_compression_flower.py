"""What the compressed update path relies on in the pinned flwr (1.42): Flower carries an Array of a
type of its own (stype "flrepo.<codec>") and legacy Parameters of a tensor type of their own through
its wire format unchanged, bytes included. Each test fails loudly when a flwr upgrade changes that;
fix flrepo.fl.message.compressed or flrepo.fl.legacy.compressed, then the test."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flwr")


def test_a_message_array_of_flreposs_own_type_crosses_the_wire_format_unchanged():
    from flwr.app import ArrayRecord
    from flwr.common.serde import array_record_from_proto, array_record_to_proto

    from flrepo.fl.core import codecs
    from flrepo.fl.message.compressed import codec_of, to_record, weights_of

    delta = [np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)]
    blobs = codecs.encode_all("topk", delta, 0.1)
    record = to_record("topk", blobs, delta)
    back = array_record_from_proto(array_record_to_proto(record))
    assert codec_of(back) == "topk" and [a.data for a in back.values()] == blobs
    assert [(a.dtype, tuple(a.shape)) for a in back.values()] == [("float32", (8, 8))]
    plain = array_record_from_proto(array_record_to_proto(ArrayRecord(delta)))
    assert codec_of(plain) is None and np.array_equal(weights_of(plain)[0][0], delta[0])


def test_legacy_parameters_of_flreposs_own_tensor_type_cross_the_wire_format_unchanged():
    from flwr.common.serde import parameters_from_proto, parameters_to_proto

    from flrepo.fl.core import codecs
    from flrepo.fl.legacy.compressed import codec_of, to_parameters

    blobs = codecs.encode_all("stc", [np.arange(-50, 50, dtype=np.float32)], 0.1)
    back = parameters_from_proto(parameters_to_proto(to_parameters("stc", blobs)))
    assert codec_of(back) == "stc" and back.tensors == blobs


def test_a_message_strategy_builds_its_messages_with_settable_content():
    """ServerSide.outgoing replaces each message's arrays through Message.content's setter-backed
    RecordDict; FedAvg's messages of a round may share one RecordDict (the encoding is cached)."""
    import inspect

    from flwr.app import Message

    assert isinstance(inspect.getattr_static(Message, "content"), property)
    assert inspect.getattr_static(Message, "content").fset is not None
