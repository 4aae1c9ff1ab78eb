"""The wire contract: request and response bodies (aerOS field names), task plans and status, and the
input rules every identifier and user-supplied document obeys. Shared by the server, the SDK and the CLI."""

from flrepo.schemas.identifiers import Identifier, SafeDict, check_identifier, check_keys
from flrepo.schemas.items import (
    CollectorIn,
    CollectorOut,
    FileInfo,
    Health,
    ModelIn,
    ModelMeta,
    ModelOut,
    Needs,
    Problem,
    StrategyIn,
    StrategyMetaIn,
    StrategyOut,
    TrainingResultIn,
    TrainingResultOut,
    TransformationFields,
    TransformationIn,
    TransformationOut,
    TransformationUpdate,
)

__all__ = [
    "CollectorIn",
    "CollectorOut",
    "FileInfo",
    "Health",
    "Identifier",
    "ModelIn",
    "ModelMeta",
    "ModelOut",
    "Needs",
    "Problem",
    "SafeDict",
    "StrategyIn",
    "StrategyMetaIn",
    "StrategyOut",
    "TrainingResultIn",
    "TrainingResultOut",
    "TransformationFields",
    "TransformationIn",
    "TransformationOut",
    "TransformationUpdate",
    "check_identifier",
    "check_keys",
]
