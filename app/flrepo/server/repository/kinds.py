"""The kinds of stored items: which collection holds them, what names one, which aerOS field points
at its file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flrepo.server.storage.db import FILE_FIELDS, NATURAL_KEYS
from flrepo.server.storage.errors import NotFound

# aerOS 1.1.0 names each GridFS file by its item's path (`fs.put(data, filename=f'model/{name}/{version}')`
# in application/main.py) and its readers look files up by that name (the orchestrator's
# `fs.files.find_one({'filename': 'model/classification/base2'})`, the GUI's split of `filename` on "/").
# flrepo writes the same names; checkpoints, which aerOS did not have, follow the same scheme.
GRID_NAMES: dict[str, str] = {
    "models": "model/{model_name}/{model_version}",
    "results": "weights/{model_name}/{model_version}/{configuration_id}",
    "strategies": "strategy/{strategy_name}",
    "transformations": "transformation/{id}",
    "checkpoints": "checkpoint/{task_id}/{round}",
}
# A finished resumable upload's file until its target takes it (then it is renamed to the target's name).
UPLOAD_GRID_NAME = "upload/{upload_id}"
# GridFS names of files only flrepo has (aerOS's `/models/available` never listed such files).
OWN_GRID_PREFIXES = ("checkpoint/", "upload/")


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

    def grid_name(self, doc: dict[str, Any]) -> str:
        """The GridFS file name of the item `doc` describes, as aerOS writes it."""
        pattern = GRID_NAMES.get(self.collection) or self.collection + "/" + "/".join(f"{{{k}}}" for k in self.keys)
        # Values formatted as aerOS's f-strings format them (a null configuration id reads "None").
        return pattern.format_map({name: doc.get(name) for name in (*self.keys, "configuration_id")})

    def grid_fields(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Fields aerOS adds to the GridFS files document beside the name: weights carry their `training_id`."""
        if self.collection == "results":
            return {"training_id": str(doc.get("training_id"))}
        return {}

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
