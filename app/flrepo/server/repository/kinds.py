"""The kinds of stored items: which collection holds them, what names one, which aerOS field points
at its file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flrepo.server.storage.db import FILE_FIELDS, NATURAL_KEYS
from flrepo.server.storage.errors import NotFound


@dataclass(frozen=True)
class Kind:
    """One collection: where it lives, what names it, which aerOS field holds its GridFS id."""

    collection: str
    label: str

    @property
    def file_field(self) -> str | None:
        """The aerOS field holding the GridFS id; None: items of this kind have no file."""
        return FILE_FIELDS.get(self.collection)

    @property
    def id_field(self) -> str:
        if self.file_field is None:
            raise TypeError(f"a {self.label} has no file")
        return self.file_field

    @property
    def keys(self) -> tuple[str, ...]:
        return NATURAL_KEYS[self.collection]

    def key_of(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {k: doc.get(k) for k in self.keys}

    def describe(self, key: dict[str, Any]) -> str:
        return f"{self.label} " + ", ".join(f"{k}={key.get(k)!r}" for k in self.keys)

    def not_found(self, key: dict[str, Any]) -> NotFound:
        return NotFound(f"{self.describe(key)} not found")

    def default_filename(self, key: dict[str, Any]) -> str:
        return "_".join(str(key.get(k)) for k in self.keys) + ".bin"


MODELS = Kind("models", "model")
RESULTS = Kind("results", "training result")
STRATEGIES = Kind("strategies", "strategy")
TRANSFORMATIONS = Kind("transformations", "transformation")
TASKS = Kind("tasks", "task")
CHECKPOINTS = Kind("checkpoints", "checkpoint")
COLLECTORS = Kind("collectors", "collector")
ROUNDS = Kind("task_rounds", "round record")
ALL_KINDS = (MODELS, RESULTS, STRATEGIES, TRANSFORMATIONS, TASKS, CHECKPOINTS, COLLECTORS, ROUNDS)
