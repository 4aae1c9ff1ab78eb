"""The update codecs (flrepo.fl.core.codecs) and the site's error feedback
(flrepo.fl.core.compression): each codec's round trip within its stated error, its size, and the
residual carried across rounds and across a restart of the site."""

from __future__ import annotations

import numpy as np
import pytest

from flrepo.fl.core import codecs, compression

SHAPES = [(32, 64), (32,), (10, 32), (10,), (3, 4, 5), (1,)]


def _delta(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=s) * 0.05).astype(np.float32) for s in SHAPES]


def test_varints_round_trip_from_0_to_2_to_the_64_minus_1():
    values = np.array([0, 1, 127, 128, 300, 16_383, 16_384, 2**35, 2**64 - 1], dtype=np.uint64)
    data = codecs.varints(values)
    assert len(codecs.varints(np.array([127]))) == 1 and len(codecs.varints(np.array([128]))) == 2
    decoded, end = codecs.read_varints(data + b"\x07", len(values))
    assert decoded.tolist() == values.tolist() and end == len(data)
    with pytest.raises(codecs.CodecError):
        codecs.read_varints(data[:-1], len(values))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_none_is_exact_and_keeps_the_dtype(dtype):
    array = (np.random.default_rng(1).normal(size=(7, 3)) * 100).astype(dtype)
    decoded = codecs.decode("none", codecs.encode("none", array))
    assert decoded.dtype == array.dtype and np.array_equal(decoded, array)


def test_fp16_within_a_relative_2_to_the_minus_11():
    for a in _delta():
        d = codecs.decode("fp16", codecs.encode("fp16", a))
        assert d.shape == a.shape
        assert np.all(np.abs(d - a) <= np.abs(a) * 2.0**-11 + 2.0**-24)
        assert len(codecs.encode("fp16", a)) <= 2 * a.size + 4


def test_int8_within_half_a_step_of_its_per_tensor_scale():
    for a in _delta():
        blob = codecs.encode("int8", a)
        d = codecs.decode("int8", blob)
        step = float(np.abs(a).max()) / 127
        assert np.all(np.abs(d - a) <= step / 2 + 1e-7)
        assert len(blob) <= a.size + 4 + 4


@pytest.mark.parametrize("ratio", [0.01, 0.03, 0.1, 1.0])
def test_topk_keeps_the_largest_values_in_fp16_and_zeros_the_rest(ratio):
    for a in _delta():
        blob = codecs.encode("topk", a, ratio)
        d = codecs.decode("topk", blob)
        k = codecs.kept(a.size, ratio)
        kept = np.flatnonzero(d.ravel())
        assert len(kept) == k
        threshold = np.sort(np.abs(a.ravel()))[-k]
        assert np.all(np.abs(a.ravel()[kept]) >= threshold)  # exactly the largest k
        assert np.all(np.abs(d.ravel()[kept] - a.ravel()[kept]) <= np.abs(a.ravel()[kept]) * 2.0**-11 + 2.0**-24)
        # No dense zeros: 2 bytes a value, about 1 a position, a few of header.
        assert len(blob) <= 4 * k + 8


def test_topk_at_3_percent_is_over_30x_smaller_than_plain_arrays():
    delta = _delta()
    plain = compression.plain_size(delta)
    sent = sum(len(b) for b in codecs.encode_all("topk", delta, 0.03))
    assert plain / sent >= 30, (plain, sent)


def test_stc_sends_the_top_k_as_plus_or_minus_their_mean_magnitude():
    for a in _delta():
        blob = codecs.encode("stc", a, 0.03)
        d = codecs.decode("stc", blob).ravel()
        k = codecs.kept(a.size, 0.03)
        top = np.argsort(np.abs(a.ravel()))[-k:]
        mu = np.float32(np.abs(a.ravel()[top]).mean())
        assert np.allclose(d[top], np.sign(a.ravel()[top]) * mu, rtol=1e-6)
        assert np.count_nonzero(d) == k
    # One bit a sign instead of 2 bytes a value: smaller than top-k over a model.
    delta = _delta()
    stc, topk = (sum(map(len, codecs.encode_all(c, delta, 0.03))) for c in ("stc", "topk"))
    assert stc < topk * 0.75, (stc, topk)


def test_a_truncated_or_foreign_blob_is_refused():
    blob = codecs.encode("topk", _delta()[0], 0.03)
    with pytest.raises(codecs.CodecError):
        codecs.decode("topk", blob[:10])
    with pytest.raises(codecs.CodecError):
        codecs.encode("gzip", _delta()[0])


def test_the_collector_rebuilds_the_site_weights_from_what_it_sent_plus_the_delta():
    rng = np.random.default_rng(2)
    global_weights = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    blobs, sent, _ = compression.downlink(global_weights, "fp16")
    assert sum(map(len, blobs)) * 1.9 < compression.plain_size(global_weights)  # fp16 about halves it
    local = [s + d for s, d in zip(sent, _delta(3), strict=True)]
    spec = compression.Compression(uplink="int8")
    update = compression.encode_update(sent, local, spec, residual=None)
    rebuilt, _ = compression.apply_delta(sent, update.codec, update.blobs or [])
    for r, w, d in zip(rebuilt, local, _delta(3), strict=True):
        assert np.all(np.abs(r - w) <= np.abs(d).max() / 254 + 1e-6)
    plain = compression.encode_update(sent, local, compression.Compression(), residual=None)
    assert plain.codec == "none" and plain.weights is local  # no compression: the weights as they are


def test_error_feedback_carries_the_residual_across_rounds_and_a_restart(tmp_path, monkeypatch):
    monkeypatch.setenv("FLREPO_STATE_DIR", str(tmp_path / "state"))
    x_train = np.arange(12.0).reshape(4, 3)
    path = compression.residual_file("http://repo", "t1", 1, x_train)
    assert path.is_relative_to(tmp_path / "state")
    assert path == compression.residual_file("http://repo", "t1", 1, x_train.copy())  # the same site again
    assert path != compression.residual_file("http://repo", "t1", 2, x_train)  # another site
    spec = compression.Compression(uplink="topk", ratio=0.03, error_feedback=True)
    received = [np.zeros(s, dtype=np.float32) for s in SHAPES]
    first = _delta(4)

    update = compression.encode_update(received, first, spec, path)
    sent_first = codecs.decode_all("topk", update.blobs or [])
    residual = compression.load_residual(path, received)
    assert residual is not None
    for r, d, s in zip(residual, first, sent_first, strict=True):
        assert np.allclose(r, d - s)  # exactly what the codec left out
    # Round 2, in a new process (nothing kept in memory): the residual is added to the new delta.
    second = _delta(5)
    update = compression.encode_update(received, second, spec, path)
    decoded = codecs.decode_all("topk", update.blobs or [])
    carried = [d + r for d, r in zip(second, residual, strict=True)]
    for c, s in zip(carried, decoded, strict=True):
        k = codecs.kept(c.size, 0.03)
        assert np.count_nonzero(s) == k
        assert np.all(np.abs(c.ravel()[np.flatnonzero(s)]) >= np.sort(np.abs(c.ravel()))[-k] - 1e-7)
    # Summed over the rounds, what was sent plus what is kept is what was trained: nothing is lost.
    kept_now = compression.load_residual(path, received)
    assert kept_now is not None
    for a, b, s1, s2, r in zip(first, second, sent_first, decoded, kept_now, strict=True):
        assert np.allclose(a + b, s1 + s2 + r, atol=1e-6)
    # Without error feedback nothing is kept or read.
    other = tmp_path / "none.npz"
    compression.encode_update(received, first, compression.Compression("topk", 0.03, False), other)
    assert not other.exists()


def test_a_residual_that_does_not_fit_the_model_is_not_used(tmp_path):
    path = tmp_path / "r.npz"
    compression.save_residual(path, [np.ones((2, 2), dtype=np.float32)])
    assert compression.load_residual(path, [np.zeros((3,))]) is None
    assert compression.load_residual(path, [np.zeros((2, 2))]) is not None


def test_the_settings_travel_in_a_round_config_and_leave_it_again():
    spec = compression.Compression("stc", 0.02, False, "fp16")
    config = {"epochs": 1, **spec.config()}
    assert compression.Compression.of_config(config) == spec
    assert compression.Compression.of_config({k.replace("-", "_"): v for k, v in config.items()}) == spec
    assert compression.strip_config(config) == {"epochs": 1}
    assert compression.Compression.of_config({}) == compression.Compression()
    assert compression.Compression.of_task({"compression": {"uplink": "int8"}}).uplink == "int8"
