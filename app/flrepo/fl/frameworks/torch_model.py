"""The `pytorch` client: a `torch.export` program (`.pt2`, written by `torch.export.save`).

`torch.export.load(f).module()` rebuilds the module from the program's graph and weights, without
the uploader's Python code and without unpickling, and it trains with an ordinary optimizer.
Weights go to Flower in the program's own state-dict order (parameters, then buffers).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from flrepo.fl.frameworks.base import LocalModel, ModelError, Training, Weights, accuracy

DEFAULT_LEARNING_RATE = {"sgd": 0.01, "adam": 0.001}


class TorchModel(LocalModel):
    library = "pytorch"
    suffix = ".pt2"

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        self.program = program
        self.module = program.module()
        self.names = list(program.state_dict)

    @classmethod
    def load(cls, path: Path, meta: Mapping[str, Any]) -> TorchModel:
        try:
            # An open file, not the path: torch warns about paths not ending in .pt2, and a
            # downloaded model is stored under whatever name the task's work folder gives it.
            with open(path, "rb") as program:
                return cls(torch.export.load(program))
        except Exception as exc:  # torch raises many kinds of errors for a file that is not a program
            raise ModelError(f"not a torch.export program (.pt2): {type(exc).__name__}: {str(exc)[:200]}") from None

    def _state(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def get_weights(self) -> Weights:
        state = self._state()
        return [state[name].detach().cpu().numpy().copy() for name in self.names]

    def set_weights(self, weights: Weights) -> None:
        self.check_weights(weights)
        state = self._state()
        new = {
            name: torch.as_tensor(np.asarray(array)).to(dtype=state[name].dtype)
            for name, array in zip(self.names, weights, strict=True)
        }
        self.module.load_state_dict(new, strict=False)

    def sample_shape(self) -> tuple[int, ...] | None:
        inputs = self.program.graph_signature.user_inputs
        if len(inputs) != 1:
            return None
        for node in self.program.graph.nodes:
            if node.op == "placeholder" and node.name == inputs[0]:
                value = node.meta.get("val")
                dims = tuple(getattr(value, "shape", ()))[1:]
                return tuple(int(d) for d in dims) if all(isinstance(d, int) for d in dims) else None
        return None

    def fit(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> dict[str, float]:
        torch.manual_seed(training.seed)
        optimizer_name = training.optimizer or "adam"
        lr = training.learning_rate or DEFAULT_LEARNING_RATE[optimizer_name]
        params = [p for p in self.module.parameters() if p.requires_grad]
        optimizer: torch.optim.Optimizer = (
            torch.optim.Adam(params, lr=lr) if optimizer_name == "adam" else torch.optim.SGD(params, lr=lr)
        )
        anchor = [p.detach().clone() for p in params] if training.proximal_mu else []
        xt, yt = _inputs(x), _targets(y, training.loss)
        generator = torch.Generator().manual_seed(training.seed)
        for _ in range(training.epochs):
            order = torch.randperm(len(xt), generator=generator)
            for start in range(0, len(xt), training.batch_size):
                idx = order[start : start + training.batch_size]
                optimizer.zero_grad()
                loss = _loss(self.module(xt[idx]), yt[idx], training.loss)
                if anchor:  # FedProx's proximal term
                    drift = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
                    loss = loss + training.proximal_mu / 2 * drift
                loss.backward()
                optimizer.step()
        train_loss, metrics = self.evaluate(x, y, training)
        return {"train_loss": train_loss, **{f"train_{k}": v for k, v in metrics.items()}}

    def evaluate(self, x: NDArray[Any], y: NDArray[Any], training: Training) -> tuple[float, dict[str, float]]:
        with torch.no_grad():
            out = self.module(_inputs(x))
            yt = _targets(y, training.loss)
            loss = float(_loss(out, yt, training.loss))
        if training.loss in (None, "cross_entropy"):
            return loss, {"accuracy": accuracy(out.argmax(dim=1).numpy(), y)}
        if training.loss == "binary_cross_entropy":
            return loss, {"accuracy": accuracy((out.reshape(-1) > 0).long().numpy(), y)}
        return loss, {}

    def save(self, path: Path) -> None:
        state = self._state()
        for name in self.names:
            old = self.program.state_dict[name]
            value = state[name].detach().clone()
            # The program's verifier wants parameters as Parameters, buffers as plain tensors.
            isparam = isinstance(old, torch.nn.Parameter)
            self.program.state_dict[name] = torch.nn.Parameter(value, old.requires_grad) if isparam else value
        torch.export.save(self.program, str(path))


def _inputs(x: NDArray[Any]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def _targets(y: NDArray[Any], loss: str | None) -> torch.Tensor:
    if loss in (None, "cross_entropy"):
        if not np.issubdtype(np.asarray(y).dtype, np.integer):
            raise ModelError("cross_entropy needs integer class ids as labels")
        return torch.as_tensor(np.asarray(y, dtype=np.int64))
    return torch.as_tensor(np.asarray(y, dtype=np.float32))


def _loss(out: torch.Tensor, y: torch.Tensor, loss: str | None) -> torch.Tensor:
    try:
        if loss in (None, "cross_entropy"):
            return torch.nn.functional.cross_entropy(out, y)
        if loss == "binary_cross_entropy":
            return torch.nn.functional.binary_cross_entropy_with_logits(out.reshape(y.shape), y)
        return torch.nn.functional.mse_loss(out.reshape(y.shape) if out.numel() == y.numel() else out, y)
    except (RuntimeError, IndexError) as exc:
        raise ModelError(
            f"the labels do not fit the model's output {tuple(out.shape)} for {loss or 'cross_entropy'}: {exc}"
        ) from None
