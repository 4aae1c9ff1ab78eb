"""A round's aggregate does not depend on the order in which the sites' replies arrived
(flrepo.fl.core.ordering): the same replies, handed to each runtime's collector hooks in every order,
aggregate to bit-identical arrays through the task's Flower FedAvg, unmodified; handed to that FedAvg
directly, the same replies do not (which is what the ordering is for)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("flwr")

SITES = 3


def _site_weights() -> list[list[np.ndarray]]:
    """Three sites' float32 weights of different magnitudes: sums of their weighted terms round
    differently in different orders."""
    rng = np.random.default_rng(7)
    return [
        [(rng.normal(size=(64, 32)) * scale).astype(np.float32), (rng.normal(size=(32,)) * scale).astype(np.float32)]
        for scale in (1.0, 1e-3, 300.0)
    ]


def _bits(weights: list[np.ndarray]) -> list[bytes]:
    return [np.ascontiguousarray(w).tobytes() for w in weights]


def _differ_in_some_order(aggregates: list[list[bytes]]) -> bool:
    return any(a != aggregates[0] for a in aggregates[1:])


def test_the_legacy_collector_aggregates_the_same_results_in_any_order_to_the_same_bits():
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import FedAvg

    from flrepo.client import RepositoryClient
    from flrepo.fl.core.link import TaskLink
    from flrepo.fl.legacy.strategy import ReportingStrategy

    class Proxy:  # what aggregate_fit reads of a ClientProxy
        def __init__(self, cid: str) -> None:
            self.cid = cid

    def results() -> list[tuple[Proxy, FitRes]]:  # fresh: FedAvg aggregates in place
        ok = Status(Code.OK, "")
        return [
            (Proxy(f"site-{k}"), FitRes(ok, ndarrays_to_parameters(w), 100 + 7 * k, {"loss": 0.1 * k}))
            for k, w in enumerate(_site_weights())
        ]

    orders = list(itertools.permutations(range(SITES)))
    with RepositoryClient("http://127.0.0.1:9") as repo:  # aggregation does not write to the task
        strategy = ReportingStrategy(FedAvg(), TaskLink(repo, "t"), {})
        ours, flowers = [], []
        for order in orders:
            strategy.traffic.start_round()
            given = results()
            parameters, _ = strategy.aggregate_fit(1, [given[k] for k in order], [])
            assert parameters is not None
            ours.append(_bits(parameters_to_ndarrays(parameters)))
            given = results()
            parameters, _ = FedAvg().aggregate_fit(1, [given[k] for k in order], [])  # type: ignore[arg-type]
            assert parameters is not None
            flowers.append(_bits(parameters_to_ndarrays(parameters)))
    assert _differ_in_some_order(flowers)  # these results do depend on the order, given as they come
    assert all(bits == ours[0] for bits in ours)
    # ... and the task's record of the round names every site whichever came first.
    assert strategy.reporter.counts() == {"succeeded": SITES, "failed": 0}


def test_the_message_collector_aggregates_the_same_replies_in_any_order_to_the_same_bits():
    from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    from flrepo.client import RepositoryClient
    from flrepo.fl.core.compression import Compression
    from flrepo.fl.core.link import TaskLink
    from flrepo.fl.core.reporting import RoundReporter
    from flrepo.fl.message import compressed
    from flrepo.fl.message.server import Reporting

    def replies() -> list[Message]:  # as the Grid hands them over (outside a run: metadata given)
        return [
            Message(
                content=RecordDict(
                    {"arrays": ArrayRecord(w), "metrics": MetricRecord({"num-examples": 100 + 7 * k, "loss": 0.1 * k})}
                ),
                metadata=Metadata(1, "", 10 + k, 0, "", "", 0.0, 60.0, "train"),
            )
            for k, w in enumerate(_site_weights())
        ]

    orders = list(itertools.permutations(range(SITES)))
    with RepositoryClient("http://127.0.0.1:9") as repo:  # aggregation does not write to the task
        strategy = FedAvg()
        reporter = RoundReporter(TaskLink(repo, "t"))
        Reporting(strategy, reporter, grid=None, traffic=compressed.ServerSide(Compression()))  # type: ignore[arg-type]
        ours, flowers = [], []
        for order in orders:
            given = replies()
            arrays, _ = strategy.aggregate_train(1, [given[k] for k in order])
            assert arrays is not None
            ours.append(_bits(arrays.to_numpy_ndarrays()))
            given = replies()
            arrays, _ = FedAvg().aggregate_train(1, [given[k] for k in order])
            assert arrays is not None
            flowers.append(_bits(arrays.to_numpy_ndarrays()))
    assert _differ_in_some_order(flowers)
    assert all(bits == ours[0] for bits in ours)
    assert reporter.counts() == {"succeeded": SITES, "failed": 0}


def test_replies_sort_by_their_arrays_then_by_their_weight():
    from flrepo.fl.core.ordering import reply_key

    assert reply_key([b"ab", b"c"], {}) != reply_key([b"a", b"bc"], {})  # lengths are part of the digest
    assert reply_key([b"x"], {"num_examples": 1}) != reply_key([b"x"], {"num_examples": 2})
    assert reply_key([b"x"], {"a": 1, "b": 2}) == reply_key([b"x"], {"b": 2, "a": 1})
