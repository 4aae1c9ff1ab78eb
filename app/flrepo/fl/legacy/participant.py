"""A local execution on Flower's legacy gRPC runtime: the site trainer as Flower's NumPyClient in
this process, reconnected by the core's loop (flrepo.fl.core.reconnect) while the task runs."""

from __future__ import annotations

import logging
from typing import Any

import flwr
import grpc
from flwr.client import Client, NumPyClient
from flwr.common import (
    Code,
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    GetParametersIns,
    GetParametersRes,
    Status,
    ndarrays_to_parameters,
)

from flrepo.client import RepositoryClient
from flrepo.fl.core.discovery import Connection
from flrepo.fl.core.lifecycle import Stopped, exit_code
from flrepo.fl.core.reconnect import stay
from flrepo.fl.core.trainer import SiteTrainer
from flrepo.fl.core.watch import TaskWatch
from flrepo.fl.frameworks import Weights
from flrepo.fl.legacy import compressed, privacy

log = logging.getLogger(__name__)
OK = Status(code=Code.OK, message="Success")


class FlowerClient(NumPyClient):
    """Flower's side of one site: its calls handed to the site's trainer."""

    def __init__(self, trainer: SiteTrainer) -> None:
        self.trainer = trainer

    def get_parameters(self, config: dict[str, Any]) -> Weights:
        return self.trainer.weights()

    def fit(self, parameters: Weights, config: dict[str, Any]) -> tuple[Weights, int, dict[str, Any]]:
        sent = [p.copy() for p in parameters] if privacy.CLIPPING_KEY in config else parameters
        weights, samples, metrics = self.trainer.fit(parameters, config)
        return privacy.clipped(sent, weights, metrics, config), samples, metrics  # client-side DP, if asked

    def evaluate(self, parameters: Weights, config: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
        return self.trainer.evaluate(parameters, config)


class CompressingClient(Client):
    """The site's side with the task's compression: Flower's `Client` (not NumPyClient, which would
    decode every tensor as a plain array) reading compressed global weights and answering with the
    update the round's config asks for (flrepo.fl.legacy.compressed)."""

    def __init__(self, trainer: SiteTrainer) -> None:
        self.trainer = trainer

    def get_parameters(self, ins: GetParametersIns) -> GetParametersRes:
        return GetParametersRes(status=OK, parameters=ndarrays_to_parameters(self.trainer.weights()))

    def fit(self, ins: FitIns) -> FitRes:
        weights, decode_ms = compressed.weights_of(ins.parameters)
        update, samples, metrics = self.trainer.fit_update(weights, dict(ins.config), decode_ms)
        if update.blobs is not None:
            parameters = compressed.to_parameters(update.codec, update.blobs)
        else:
            parameters = ndarrays_to_parameters(update.weights or [])
        return FitRes(status=OK, parameters=parameters, num_examples=samples, metrics=metrics)

    def evaluate(self, ins: EvaluateIns) -> EvaluateRes:
        weights, _ = compressed.weights_of(ins.parameters)
        loss, samples, metrics = self.trainer.evaluate(weights, dict(ins.config))
        return EvaluateRes(status=OK, loss=float(loss), num_examples=samples, metrics=metrics)


def run(repo: RepositoryClient, task_id: str, found: Connection, trainer: SiteTrainer) -> int:
    """Take part until the collector ends the training; Stopped (with the exit code) when the task
    ends without it (cancelled, failed) while Flower's client is mid-call."""
    client = CompressingClient(trainer)

    def attempt() -> int | None:
        try:
            flwr.client.start_client(
                server_address=found.address,
                client=client,
                insecure=found.ca is None,
                root_certificates=found.ca,
                max_wait_time=60,
            )
            return 0
        except grpc.RpcError as exc:
            log.warning("task %s: the collector went away (%s)", task_id, exc.code() if hasattr(exc, "code") else exc)
            return None

    watch = TaskWatch(repo, task_id)
    watch.start()
    try:
        return stay(repo, task_id, attempt)
    except KeyboardInterrupt:
        if watch.ended is None:
            raise
        log.warning("task %s ended: %s; local execution stopped", task_id, watch.ended)
        raise Stopped(exit_code(watch.ended)) from None
    finally:
        watch.stop()
