"""Request and response bodies, with the aerOS field names (the service only adds fields beside them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from flrepo.schemas.identifiers import Identifier, SafeDict, check_keys

Description = Annotated[str, StringConstraints(max_length=10_000)]
ResultValue = str | bool | int | float


def _id_text(value: Any) -> Any:
    # aerOS stores GridFS ids as strings, but a database edited by hand (or an older writer) may hold
    # the ObjectId itself; either way the wire carries the id's text.
    return value if value is None or isinstance(value, str) else str(value)


# A GridFS id in an aerOS field (`model_id`, `weights_id`, ...): its text, or null before any upload.
FileId = Annotated[str | None, BeforeValidator(_id_text)]


class _Body(BaseModel):
    # aerOS clients send their whole documents back (with model_id etc.); unknown fields are
    # ignored rather than refused so those clients keep working.
    model_config = ConfigDict(extra="ignore")


class FileInfo(BaseModel):
    """What the service records about a stored file (absent until one is uploaded)."""

    size: int | None = Field(default=None, description="File size in bytes.")
    sha256: str | None = Field(default=None, description="Hex SHA-256 of the file; also its ETag.")
    content_type: str | None = None
    filename: str | None = Field(default=None, description="Original file name given at upload.")
    uploaded_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


# --- models -------------------------------------------------------------------------------


class ModelMeta(BaseModel):
    """Model metadata: `library` tells local executions which trainer to use; more keys are kept."""

    model_config = ConfigDict(extra="allow")

    library: str = Field(min_length=1, max_length=128, examples=["keras"])
    description: Description | None = None

    @model_validator(mode="after")
    def _check_extra_keys(self) -> ModelMeta:
        check_keys(self.model_extra or {})
        return self


class ModelIn(_Body):
    model_name: Identifier
    model_version: Identifier
    # Required, but may be null: aerOS's own model sends `"meta": null` for a model registered
    # before its metadata is known; it is stored and returned as null.
    meta: ModelMeta | None

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model_name": "base",
                    "model_version": "base2",
                    "meta": {
                        "library": "keras",
                        "description": "Test model - A CNN designed to solve the CIFAR-10 image classification task.",
                    },
                }
            ]
        },
    )


# Responses describe documents as stored, including those aerOS 1.1.0 wrote (every field optional,
# `meta: null`, no file information): a list must never fail on one old document.


class _ModelCore(BaseModel):
    model_name: str | None = None
    model_version: str | None = None
    meta: dict[str, Any] | None = None
    model_id: FileId = Field(default=None, description="GridFS id of the model file (aerOS field).")


class ModelOut(FileInfo, _ModelCore):
    """A model as stored: the aerOS fields, then what the service records about its file."""


# --- training results ---------------------------------------------------------------------


class TrainingResultIn(_Body):
    model_name: Identifier
    model_version: Identifier
    training_id: Identifier
    # Both may be null, as bodies built from aerOS's own model carry them; a null configuration_id is
    # filled in by the first weights upload (its path names one).
    configuration_id: Identifier | None
    results: Annotated[
        dict[str, ResultValue] | None, Field(description="Metrics and settings; values keep their JSON types.")
    ]

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "model_name": "md_keras",
                    "model_version": "v1",
                    "training_id": "1",
                    "configuration_id": "1",
                    "results": {"rounds": "3", "final_loss": "81.94759609735472", "accuracy": "0.24294586930293454"},
                }
            ]
        },
    )

    @model_validator(mode="after")
    def _check_result_keys(self) -> TrainingResultIn:
        check_keys(self.results or {})
        return self


class _TrainingResultCore(BaseModel):
    model_name: str | None = None
    model_version: str | None = None
    training_id: str | None = None
    configuration_id: str | None = None
    results: dict[str, Any] | None = None
    weights_id: FileId = Field(default=None, description="GridFS id of the final weights (aerOS field).")


class TrainingResultOut(FileInfo, _TrainingResultCore):
    """A training result as stored."""


# --- strategies ---------------------------------------------------------------------------


class StrategyIn(_Body):
    strategy_name: Identifier
    strategy_description: Description | None = None
    # null is kept as null (aerOS's model sends it when no metadata is given); absent means {}.
    meta: SafeDict | None = Field(default_factory=dict)

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "strategy_name": "fault-tolerant-fedavg",
                    "strategy_description": "A fault tolerant version of FedAvg",
                    "meta": {},
                }
            ]
        },
    )


class StrategyMetaIn(_Body):
    meta: SafeDict
    strategy_description: Description | None = None


class _StrategyCore(BaseModel):
    strategy_name: str | None = None
    strategy_description: str | None = None
    meta: dict[str, Any] | None = None
    strategy_id: FileId = Field(default=None, description="GridFS id of the strategy file (aerOS field).")


class StrategyOut(FileInfo, _StrategyCore):
    """A strategy as stored."""


# --- transformations ----------------------------------------------------------------------


class Needs(BaseModel):
    model_config = ConfigDict(extra="allow")

    # null is accepted and kept where aerOS's MachineCapabilities() sends it: "not stated".
    storage: float | None = Field(default=0, ge=0)
    RAM: float | None = Field(default=0, ge=0)
    GPU: bool = False
    preinstalled_libraries: SafeDict | None = Field(default_factory=dict)
    available_models: SafeDict | None = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_extra_keys(self) -> Needs:
        check_keys(self.model_extra or {})
        return self


_TRANSFORMATION_EXAMPLE: dict[str, Any] = {
    "id": "application.tests.categorical_transformation",
    "description": "The class transforming y data into categorical data",
    "parameter_types": {"categories": "int"},
    "default_values": {"categories": 10},
    "outputs": ["np.ndarray", "np.ndarray"],
    "needs": {"storage": 0, "RAM": 0, "GPU": False, "preinstalled_libraries": {}, "available_models": {}},
}


class TransformationFields(_Body):
    description: Description | None = None
    parameter_types: dict[Annotated[str, StringConstraints(min_length=1, max_length=256)], str]
    default_values: SafeDict
    outputs: list[Annotated[str, StringConstraints(max_length=256)]]
    needs: Needs
    meta: SafeDict = Field(default_factory=dict, description="Service field (not in aerOS): e.g. the signature.")

    @model_validator(mode="after")
    def _check_parameter_keys(self) -> TransformationFields:
        check_keys(self.parameter_types)
        return self


class TransformationIn(TransformationFields):
    id: Identifier

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [_TRANSFORMATION_EXAMPLE]})


class TransformationUpdate(TransformationFields):
    """The full metadata; `id` may be left out, and if given must equal the id in the path."""

    id: Identifier | None = None

    model_config = ConfigDict(extra="ignore", json_schema_extra={"examples": [_TRANSFORMATION_EXAMPLE]})


class _TransformationCore(BaseModel):
    id: str | None = None
    description: str | None = None
    parameter_types: dict[str, Any] | None = None
    default_values: dict[str, Any] | None = None
    outputs: list[Any] | None = None
    needs: dict[str, Any] | None = None
    meta: dict[str, Any] | None = Field(default_factory=dict)
    storage_id: FileId = Field(default=None, description="GridFS id of the transformation file (aerOS field).")


class TransformationOut(FileInfo, _TransformationCore):
    """A transformation as stored."""


# --- training collectors ------------------------------------------------------------------

CollectorVersion = Annotated[int, Field(ge=0, le=2**53 - 1, description="Collector version, a whole number.")]


class CollectorIn(_Body):
    """A training collector, as aerOS 1.1.0 registers it: name, numeric version, string metadata."""

    # aerOS's pydantic v1 model turned numbers into strings in `meta`; so does this one.
    model_config = ConfigDict(
        extra="ignore",
        coerce_numbers_to_str=True,
        json_schema_extra={"examples": [{"name": "flower-collector", "version": 1, "meta": {"framework": "flwr"}}]},
    )

    name: Identifier
    version: CollectorVersion
    meta: Annotated[dict[str, str], AfterValidator(check_keys)] | None = Field(default_factory=dict)


class CollectorOut(BaseModel):
    """A training collector as stored."""

    name: str | None = None
    version: int | None = None
    meta: dict[str, Any] | None = None
    collector_id: FileId = Field(default=None, description="aerOS field; never set by the service.")
    created_at: datetime | None = None
    updated_at: datetime | None = None


# --- service ------------------------------------------------------------------------------


class Problem(BaseModel):
    """Every error answers with this body."""

    detail: Any


class Health(BaseModel):
    status: str
