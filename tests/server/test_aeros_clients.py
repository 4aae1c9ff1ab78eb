"""Play the existing aerOS clients, with `requests` against a real socket, as their code does it."""

from __future__ import annotations

import base64
import hashlib
import shutil

import requests

from tests.helpers import CHUNK, payload


def test_aeros_model_flow(live_server, tmp_path):
    repo = live_server.url
    r = requests.post(
        f"{repo}/model",
        json={"model_name": "base", "model_version": "base2", "meta": {"library": "keras", "description": "CNN"}},
        timeout=10,
    )
    assert r.status_code == 201
    src = tmp_path / "model.h5"
    src.write_bytes(payload(3 * CHUNK + 17))
    with open(src, "rb") as f:
        r = requests.put(f"{repo}/model/base/base2", files={"file": f}, timeout=30)
    assert r.status_code == 204

    r = requests.get(f"{repo}/model/meta", params={"model_name": "base", "model_version": "base2"}, timeout=10)
    assert r.json()["meta"]["library"] == "keras"

    dst = tmp_path / "downloaded.h5"
    with requests.get(f"{repo}/model/base/base2", stream=True, timeout=30) as r, open(dst, "wb") as f:
        shutil.copyfileobj(r.raw, f)
    assert dst.read_bytes() == src.read_bytes()


def test_aeros_training_collector_results(live_server, tmp_path):
    repo = live_server.url
    results = {
        "rounds": "3",
        "final_loss": "81.94759609735472",
        "accuracy": "0.24294586930293454",
        "min_fit_clients": "1",
        "min_evaluate_clients": "1",
        "min_available_clients": "1",
    }
    body = {
        "model_name": "md_keras",
        "model_version": "v1",
        "training_id": "1",
        "configuration_id": "1",
        "results": results,
    }
    r = requests.post(f"{repo}/training-results", json=body, timeout=10)
    assert r.status_code == 201
    weights = tmp_path / "weights.pkl"
    weights.write_bytes(payload(CHUNK + 3))
    with open(weights, "rb") as f:
        r = requests.put(f"{repo}/training-results/md_keras/v1/1/1", files={"file": f}, timeout=30)
    assert r.status_code == 204
    listed = requests.get(f"{repo}/training-results/md_keras/v1", timeout=10).json()
    assert listed[0]["results"] == results  # strings stay strings
    # aerOS's answer, which its GUI decodes (fl-ui `b64toBlob`): the weights base64-encoded.
    r = requests.get(f"{repo}/training-results/weights/md_keras/v1/1", stream=True, timeout=30)
    digest = hashlib.sha256(base64.b64decode(r.raw.read())).hexdigest()
    assert digest == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_aeros_strategy_and_transformation_downloads(live_server, tmp_path):
    repo = live_server.url
    requests.post(f"{repo}/strategy", json={"strategy_name": "fault-tolerant-fedavg", "meta": {}}, timeout=10)
    transformation = {
        "id": "application.tests.categorical_transformation",
        "parameter_types": {"categories": "int"},
        "default_values": {"categories": 10},
        "outputs": ["np.ndarray", "np.ndarray"],
        "needs": {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {}, "available_models": {}},
    }
    assert requests.post(f"{repo}/transformation", json=transformation, timeout=10).status_code == 201
    for path in ("strategy/fault-tolerant-fedavg", "transformation/application.tests.categorical_transformation"):
        data = payload(1234)
        r = requests.put(f"{repo}/{path}", files={"file": ("obj.pkl", data)}, timeout=10)
        assert r.status_code == 204
        with requests.get(f"{repo}/{path}", stream=True, timeout=10) as r:
            assert r.headers["content-length"] == "1234" and "content-encoding" not in r.headers
            assert r.raw.read() == data
