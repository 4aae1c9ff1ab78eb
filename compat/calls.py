"""The aerOS components' repository calls (vendor/), run in their pinned environment against a live
repository, one line per call: `PASS|FAIL component: call: detail`. Run by run.py, which starts the
repository; see README.md. Arguments: the repository's URL, its MongoDB host:port, a work folder."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
URL, MONGO, WORK = sys.argv[1], sys.argv[2], Path(sys.argv[3])
os.environ["REPOSITORY_ADDRESS"] = URL
sys.path.insert(0, str(HERE / "vendor"))
AEROS_STRATEGY = HERE.parent / "tests" / "data" / "aeros" / "application" / "tests" / "data" / "strategy_test.pkl"
failures = 0


def check(component: str, call: str, run) -> object:
    """Run one call in a fresh folder of its own; print its line."""
    global failures
    folder = WORK / f"{component}-{call}".replace(" ", "_").replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    try:
        detail = run()
    except Exception as exc:  # a component's call failing is what this reports
        failures += 1
        print(f"FAIL {component}: {call}: {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc(file=sys.stderr)
        return None
    verdict = "SKIP" if str(detail).startswith("SKIPPED") else "PASS"
    print(f"{verdict} {component}: {call}: {detail}", flush=True)
    return detail


import requests  # noqa: E402 - after the path set-up, the pinned one

import collector  # noqa: E402
import local_operations  # noqa: E402
import orchestrator  # noqa: E402


def setup_items() -> str:
    """What the components expect to find, created as aerOS's own clients create it."""
    s = requests.Session()
    for name, version, library in [("migration_predictor", "v1", "keras"), ("classification", "base2", "keras")]:
        body = {"model_name": name, "model_version": version, "meta": {"library": library, "description": "compat"}}
        assert s.post(f"{URL}/model", json=body).status_code == 201
    with open(HERE / "data" / "migration_predictor_v1.zip", "rb") as f:
        assert s.put(f"{URL}/model/classification/base2", files={"file": f}).status_code == 204
    assert s.post(f"{URL}/strategy", json={"strategy_name": "fedavg-aeros", "meta": {}}).status_code == 201
    with open(AEROS_STRATEGY, "rb") as f:
        assert s.put(f"{URL}/strategy/fedavg-aeros", files={"file": f}).status_code == 204
    t = {"id": "application.tests.migration_loader", "parameter_types": {}, "default_values": {}, "outputs": [],
         "needs": {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {}, "available_models": {}}}
    assert s.post(f"{URL}/transformation", json=t).status_code == 201
    with open(HERE / "data" / "application.tests.migration_loader.zip", "rb") as f:
        assert s.put(f"{URL}/transformation/application.tests.migration_loader", files={"file": f}).status_code == 204
    return "2 models, a strategy (aerOS's FedAvg pickle), a transformation (fl-experiments' data loader)"


def upload_script() -> str:
    """fl-experiments scripts/upload_model.py, unchanged (it PUTs to localhost:9013)."""
    if not URL.endswith(":9013"):
        return "SKIPPED: the repository is not on port 9013, which the script names"
    setup = Path("setup/model")
    setup.mkdir(parents=True)
    (setup / "migration_predictor_v1.zip").write_bytes((HERE / "data" / "migration_predictor_v1.zip").read_bytes())
    run = subprocess.run([sys.executable, str(HERE / "vendor" / "upload_model.py")], capture_output=True, text=True)
    assert "Model uploaded successfully!" in run.stdout, run.stdout + run.stderr
    return run.stdout.strip().splitlines()[-1]


def flower_job(strategy) -> str:
    """The collector's Flower job on flwr 1.3.0: the downloaded strategy, two clients, one round, then
    the collector's result upload (send_training_results, verbatim)."""
    import flwr as fl
    import numpy as np

    strategy.initial_parameters = fl.common.ndarrays_to_parameters([np.zeros(3)])
    port = _free_port()
    # Each client in a process of its own, as the local operations run: two gRPC channels of one
    # process share a connection, and flwr 1.3.0 tells its clients apart by their connection.
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, str(port), str(k)]) for k in range(2)]
    try:
        # The server in this (main) thread, as the collector runs it.
        history = fl.server.start_server(
            server_address=f"127.0.0.1:{port}", config=fl.server.ServerConfig(num_rounds=1), strategy=strategy
        )
    finally:
        for c in clients:
            c.wait(timeout=60)
    loss = history.losses_distributed[-1][1]
    os.makedirs("model/7", exist_ok=True)
    with open("model/7/aggregated-weights.pkl", "wb") as f:
        pickle.dump([np.ones(3)], f)
    conf = SimpleNamespace(dict=lambda exclude_unset=True: {"num_rounds": 1})
    wrapper = collector.TrainingStrategyWrapper("model/7", "migration_predictor", "v1", 7, 1, conf)
    wrapper.send_training_results(loss, {"accuracy": "0.5"}, 1)
    listed = requests.get(f"{URL}/training-results/migration_predictor/v1").json()
    assert listed and listed[0]["results"]["rounds"] == "1" and listed[0]["weights_id"], listed
    return f"1 round with 2 clients, loss {loss}; result and weights stored"


CLIENT = """
import socket, sys, time
import flwr as fl
import numpy as np

port, k = int(sys.argv[1]), int(sys.argv[2])

class Client(fl.client.NumPyClient):
    def get_parameters(self, config):
        return [np.full((3,), float(k))]

    def fit(self, parameters, config):
        return [p + 1.0 for p in parameters], 10, {"accuracy": 0.5}

    def evaluate(self, parameters, config):
        return float(np.abs(parameters[0]).mean()), 10, {"accuracy": 0.5}

deadline = time.monotonic() + 60  # flwr 1.3.0's client does not retry a refused connection
while time.monotonic() < deadline:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            break
    time.sleep(0.1)
fl.client.start_numpy_client(server_address=f"127.0.0.1:{port}", client=Client())
"""


def _wait_for_port(port: int, timeout: float = 60) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    check("setup", "items as aerOS clients create them", setup_items)
    check("fl-experiments", "upload_model.py", upload_script)
    strategy = check("training collector", "download_strategy", lambda: collector.download_strategy("fedavg-aeros"))
    if strategy is not None:
        check("training collector", "Flower job and send_training_results", lambda: flower_job(strategy))
    loader = local_operations.BasicModelLoader()
    check("local operations", "check_library", lambda: loader.check_library("migration_predictor", "v1"))

    def load_model():
        loader.load("classification", "base2")
        path = loader.check_loading_path(loader.temp_dir)
        assert os.path.isfile(os.path.join(path, "saved_model.pb")), os.listdir(path)
        return f"SavedModel extracted at {path}"

    check("local operations", "load model (HTTP)", load_model)

    def load_transformation():
        t = local_operations.TrainingTransformationLoader()
        t.download_transformation("application.tests.migration_loader")
        return sorted(os.listdir(t.local_files))

    check("local operations", "load transformation (download)", load_transformation)
    host, port = URL.removeprefix("http://").rsplit(":", 1)
    orchestrator.const.FL_REPOSITORY_HOSTNAME, orchestrator.const.FL_REPOSITORY_PORT = host, port
    check("orchestrator", "getModels_FLRepository", lambda: sorted(m["model_name"] for m in orchestrator.getModels_FLRepository()))
    check("orchestrator", "training-id parsing", lambda: orchestrator.new_training_id()[1])
    orchestrator.const.FL_REPOSITORY_HOSTNAME = MONGO

    def gridfs_read():
        data = orchestrator.download_models()
        assert data == (HERE / "data" / "migration_predictor_v1.zip").read_bytes()
        return f"{len(data)} bytes of model/classification/base2"

    check("orchestrator", "download_models (GridFS)", gridfs_read)
    print(json.dumps({"python_failures": failures}), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
