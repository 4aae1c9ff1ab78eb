"""Compressed updates end to end on both Flower runtimes: a task with a `compression` trains with real
processes, each round's record carries its bytes each way (smaller than plain arrays by the codec's
factor), the training result the totals, the sites keep their error-feedback residual in their state
directory, and the published model is within issue #24's bound of the same task's without
compression (BOUNDS). Plus the collector's side alone: plain arrays from an older site are taken as
they are, on both carriers."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from flrepo.fl.core import compression
from flrepo.fl.demo import digits_task, held_out_accuracy, register_model, start_training
from flrepo.server.embedded import reap
from tests.helpers import logs_of

TOPK_EF = {"uplink": "topk", "ratio": 0.03, "error_feedback": True, "downlink": "fp16"}
SITES = ["digits:1/2", "digits:2/2"]
# Top-k at 3 % moves at most 3 % of each tensor a site and round, so it needs rounds to catch up with
# the uncompressed run: on this task (numpy softmax, 2 sites, SGD 0.5, 2 epochs; in process, the same
# trainers and codecs) top-k 3 % + EF is 4.2 points behind at 10 rounds, 1.1 at 30, level at 35 and
# +0.3 at 40 (fp16 downlink included); int8 is level from the start. Every task of the test trains
# the same 40 rounds.
ROUNDS = 40


def _published_accuracy(fl, tmp_path, task_id):
    trained = tmp_path / f"{task_id}.npz"
    fl.repo.download_model("digits", f"v1-{task_id}", trained)
    return held_out_accuracy("numpy", trained)


def _start(fl, task_id, strategy, rounds, **plan):
    """The task's collector and two sites (the Message-API runtime in plaintext, on loopback), each task
    with its own log folder: the tasks of a test train at the same time."""
    fl.repo.create_task(digits_task(task_id, strategy, rounds=rounds, clients=2, **plan))
    options = ["--insecure"] if strategy.startswith("message") else []
    logs = fl.logs / task_id
    logs.mkdir()
    collector, sites = start_training(fl.url, task_id, SITES, fl.env, logs, collector_options=options)
    return task_id, logs, collector, sites


def _finish(fl, tmp_path, started):
    """Each started task to its end: its status and its published model's held-out accuracy."""
    ended = {}
    try:  # generous: several tasks of 40 rounds at once on a busy two-core machine
        for _, _, collector, sites in started:
            collector.wait(1800)
            for site in sites:
                site.wait(300)
    finally:
        reap([process for _, _, collector, sites in started for process in (collector, *sites)], terminate=True)
    for task_id, logs, collector, _ in started:
        task = fl.repo.get_task(task_id).model_dump(mode="json")
        assert collector.returncode == 0 and task["phase"] == "Succeeded", logs_of(logs)
        ended[task_id] = task, _published_accuracy(fl, tmp_path, task_id)
    return ended


# Issue #24's bounds: the published model's held-out accuracy at most this far below the same task's
# without compression, and the least uplink factor.
BOUNDS = {"int8": (0.005, 3.9), "topk": (0.01, 30)}


@pytest.mark.parametrize(
    ("strategy", "specs"),
    [("fedavg", [TOPK_EF, {"uplink": "int8"}]), ("message-fedavg", [TOPK_EF])],
    ids=["legacy", "message"],
)
def test_a_compressed_task_trains_nearly_as_well_as_an_uncompressed_one_with_far_fewer_bytes(
    fl, tmp_path, strategy, specs
):
    state = tmp_path / "state"
    fl = replace(fl, env={**fl.env, "FLREPO_STATE_DIR": str(state)})
    initial = register_model(fl.repo, "digits", "v1", "numpy", tmp_path)
    # The reference and the compressed tasks train side by side (each waits on its rounds, not on CPU).
    started = [_start(fl, "plain", strategy, ROUNDS)]
    started += [_start(fl, f"small-{n}", strategy, ROUNDS, compression=spec) for n, spec in enumerate(specs)]
    ended = _finish(fl, tmp_path, started)
    plain, plain_accuracy = ended["plain"]
    assert plain_accuracy > held_out_accuracy("numpy", initial)  # the reference learned something
    for record in plain["history"]:  # measured without compression too: the reference
        assert record["bytes_up"] == record["bytes_up_raw"] > 0 and record["bytes_down"] == record["bytes_down_raw"]
    for n, spec in enumerate(specs):
        task_id = f"small-{n}"
        task, accuracy = ended[task_id]
        assert task["compression"]["uplink"] == spec["uplink"]
        tolerance, factor = BOUNDS[spec["uplink"]]
        for record, reference in zip(task["history"], plain["history"], strict=True):
            assert record["bytes_up_raw"] == reference["bytes_up"]  # the same arrays, as plain ones would cost
            assert record["bytes_up"] * factor <= record["bytes_up_raw"], record
            if spec.get("downlink") == "fp16":
                assert record["bytes_down"] * 1.9 <= record["bytes_down_raw"], record
            assert record["encode_ms"] > 0 and record["decode_ms"] > 0
        result = fl.repo.get_training_result("digits", "v1", task_id).results
        assert result["bytes_up_total"] == sum(r["bytes_up"] for r in task["history"])
        assert result["bytes_down_raw_total"] == sum(r["bytes_down_raw"] for r in task["history"])
        assert accuracy >= plain_accuracy - tolerance, (spec, plain_accuracy, accuracy)
    # Each site kept what the codec left out in its state directory: one file a site and task.
    assert len(list((state / "residuals").glob("*.npz"))) == 2 * len(specs)


def test_the_legacy_collector_takes_plain_arrays_from_an_older_site_and_rebuilds_compressed_ones():
    from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    from flrepo.fl.legacy.compressed import ServerSide, to_parameters

    class Proxy:
        def __init__(self, cid):
            self.cid = cid

    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    side = ServerSide(compression.Compression("int8", downlink="fp16"))
    side.start_round()
    ins = FitIns(ndarrays_to_parameters(weights), {})
    side.outgoing([(Proxy("old"), ins), (Proxy("new"), ins)])
    assert ins.parameters.tensor_type == "flrepo.fp16"
    ok = Status(Code.OK, "")
    old = [w + 1 for w in weights]  # an older site: its full weights, plain
    sent, _ = compression.received_weights("fp16", ins.parameters.tensors)
    new = [s + 0.5 for s in sent]
    update = compression.encode_update(sent, new, side.spec, None)
    results = [
        (Proxy("old"), FitRes(ok, ndarrays_to_parameters(old), 10, {})),
        (Proxy("new"), FitRes(ok, to_parameters("int8", update.blobs or []), 10, {compression.ENCODE_MS: 2.0})),
        (Proxy("bad"), FitRes(ok, to_parameters("int8", [b"\x02"]), 10, {})),
    ]
    good, bad = side.incoming(results)
    assert [p.cid for p, _ in good] == ["old", "new"] and [p.cid for p, _ in bad] == ["bad"]
    for got, want in zip(parameters_to_ndarrays(good[0][1].parameters), old, strict=True):
        assert np.array_equal(got, want)
    for got, want in zip(parameters_to_ndarrays(good[1][1].parameters), new, strict=True):
        assert np.allclose(got, want, atol=0.5 / 127)
    assert compression.ENCODE_MS not in good[1][1].metrics
    record = side.end_round()
    assert record["encode_ms"] >= 2.0 and record["bytes_down"] * 1.9 < record["bytes_down_raw"]


def test_the_message_collector_takes_plain_arrays_from_an_older_site_and_rebuilds_compressed_ones():
    from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict

    from flrepo.fl.message.compressed import ServerSide, to_record, weights_of

    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    side = ServerSide(compression.Compression("stc", 1.0, downlink="fp16"))
    side.start_round()
    content = RecordDict({"arrays": ArrayRecord(weights)})

    def message(src, dst, content):  # as the Grid makes them (outside a run: metadata given)
        return Message(content=content, metadata=Metadata(1, "", src, dst, "", "", 0.0, 60.0, "train"))

    outgoing = [message(0, n, content) for n in (1, 2)]
    side.outgoing(outgoing)
    record = outgoing[1].content.array_records["arrays"]
    assert [a.stype for a in record.values()] == ["flrepo.fp16"] * 2
    sent, _ = weights_of(record)

    def reply(node, arrays, metrics):
        return message(node, 0, RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}))

    new = [s + 0.25 for s in sent]
    update = compression.encode_update(sent, new, side.spec, None)
    replies = [
        reply(1, ArrayRecord([w * 2 for w in weights]), {"num-examples": 5}),
        reply(2, to_record("stc", update.blobs or [], new), {"num-examples": 5, compression.DECODE_MS: 1.0}),
    ]
    old, rebuilt = side.incoming(replies)
    assert all(np.array_equal(g, w * 2) for g, w in zip(old.content.array_records["arrays"].to_numpy_ndarrays(),
                                                        weights, strict=True))  # fmt: skip
    for got, want in zip(rebuilt.content.array_records["arrays"].to_numpy_ndarrays(), new, strict=True):
        assert np.allclose(got, want, atol=1e-3)  # +-0.25 everywhere: STC's mean magnitude is exact
    assert compression.DECODE_MS not in rebuilt.content.metric_records["metrics"]
    assert side.end_round()["decode_ms"] >= 1.0


def test_a_site_restarted_in_a_new_process_adds_the_residual_its_last_process_kept(tmp_path):
    """The residual is in a file named by the site, not in memory: a new process finds it."""
    script = """
import sys, numpy as np
from flrepo.fl.core import compression
spec = compression.Compression("topk", 0.1, True)
path = compression.residual_file("http://repo", "t1", 1, np.arange(6.0))
received = [np.zeros(50, dtype=np.float32)]
delta = [np.linspace(-1, 1, 50, dtype=np.float32) * float(sys.argv[1])]
update = compression.encode_update(received, delta, spec, path)
print(np.flatnonzero(compression.codecs.decode("topk", update.blobs[0])).tolist())
"""
    env = {"FLREPO_STATE_DIR": str(tmp_path), "PATH": ""}
    run = [sys.executable, "-c", script]
    first = subprocess.run([*run, "1"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    # The second delta alone would send the same extremes; with the first round's residual added, the
    # values next to them (kept back then, largest now) go instead.
    second = subprocess.run([*run, "1"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    kept_first, kept_second = set(eval(first)), set(eval(second))  # our own printed list
    assert len(kept_first) == 5 and {0, 49} <= kept_first and not kept_first & kept_second, (first, second)
    assert len(list((tmp_path / "residuals").glob("*.npz"))) == 1
