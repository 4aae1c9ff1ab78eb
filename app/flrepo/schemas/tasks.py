"""FL tasks: a training plan plus the status its training collector reports, round by round.

The status follows the Kubernetes FederatedLearning task of the seeds: a `phase`
(Pending → Running → Succeeded | Failed), `conditions` of type Training, Completed or Failed with
reasons and transition times, start and completion times, the current round, participants with
counts of active, succeeded and failed ones, and a per-round history. A collector heartbeats into
the status; a cancelled task is `Failed` with reason `Cancelled`.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from flrepo.schemas.identifiers import Identifier, SafeDict, check_keys
from flrepo.schemas.items import FileInfo
from flrepo.schemas.privacy import PrivacySettings
from flrepo.schemas.strict import StoredView, StrictBody

Text = Annotated[str, StringConstraints(max_length=2000)]
MetricValues = Annotated[dict[str, float | int | str | bool], AfterValidator(check_keys)]


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


# The phases a task ends in: nothing changes a task in one (the server refuses, the runtime stops).
TERMINAL = (Phase.SUCCEEDED, Phase.FAILED)

# Reasons the service itself, not a collector, gives a task's end.
CANCELLED = "Cancelled"
COLLECTOR_LOST = "CollectorLost"
NOT_ENOUGH_PARTICIPANTS = "NotEnoughParticipants"
DEFAULT_HEARTBEAT_TIMEOUT = 60.0

# An OpenSSH public key of a Flower SuperNode: ECDSA on a NIST curve (what flower-supernode's
# --auth-supernode-private-key holds), e.g. "ecdsa-sha2-nistp256 AAAA... site-1".
_PUBLIC_KEY = re.compile(r"^(ecdsa-sha2-nistp(?:256|384|521)) ([A-Za-z0-9+/]+={0,2})(?: [^\x00-\x1f]*)?$")


def check_participant_key(value: str) -> str:
    value = value.strip()
    match = _PUBLIC_KEY.match(value)
    if not match:
        raise ValueError("must be an OpenSSH ECDSA public key: 'ecdsa-sha2-nistp256 AAAA... [comment]'")
    try:
        blob = base64.b64decode(match.group(2), validate=True)
    except ValueError:
        raise ValueError("the key's base64 part does not decode") from None
    # The blob starts with its own algorithm name (a length-prefixed string).
    name = match.group(1).encode()
    if blob[4 : 4 + len(name)] != name:
        raise ValueError(f"the key's data is not an {match.group(1)} key")
    return value


ParticipantKey = Annotated[str, StringConstraints(max_length=2000), AfterValidator(check_participant_key)]


def check_pem_certificates(value: str) -> str:
    if "-----BEGIN CERTIFICATE-----" not in value or "PRIVATE KEY" in value:
        raise ValueError("must be PEM certificates (-----BEGIN CERTIFICATE-----), never a private key")
    return value


def check_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c.isspace() for c in value):
        raise ValueError("must be HOST:PORT")
    return value


Address = Annotated[str, StringConstraints(min_length=3, max_length=300), AfterValidator(check_address)]
# `id:base64` of a raw 32-byte Ed25519 public key (the lines of the .pub files `flrepo keys signing-create` writes).
DiscoveryKey = Annotated[str, StringConstraints(pattern=r"^[^:\s]{1,128}:[A-Za-z0-9+/]{43}=$")]
PemCertificates = Annotated[str, StringConstraints(max_length=64_000), AfterValidator(check_pem_certificates)]


class ModelRef(StrictBody):
    model_name: Identifier
    model_version: Identifier


class StrategyRef(StrictBody):
    strategy_name: Identifier


class TransformationRef(StrictBody):
    id: Identifier
    parameters: SafeDict = Field(default_factory=dict, description="Overrides of the transformation's defaults.")


class TrainingConfig(StrictBody):
    """What each local execution does per round. Unset values: the model's own (a compiled Keras
    model keeps its optimizer and loss) or the framework client's default. Other keys are refused."""

    epochs: int = Field(default=1, ge=1, le=10_000)
    batch_size: int = Field(default=32, ge=1, le=1_000_000)
    learning_rate: float | None = Field(default=None, gt=0, le=100, description="Default: the optimizer's usual.")
    optimizer: Literal["sgd", "adam"] | None = Field(
        default=None, description="Default: the model's own, else sgd (numpy) or adam (pytorch, keras)."
    )
    loss: Literal["cross_entropy", "binary_cross_entropy", "mse"] | None = Field(
        default=None, description="Default: the model's own (compiled Keras), else cross_entropy."
    )


class StoredTrainingConfig(TrainingConfig):
    """A task's training settings as stored: tasks created before unknown keys were refused may hold
    others, which are shown as they are (the collector refuses to run them, naming the key)."""

    model_config = ConfigDict(extra="allow")


class CompressionSpec(StrictBody):
    """How model updates travel between the sites and the collector (flrepo.fl.core.compression).
    Lossy uplink codecs encode each site's delta (its trained weights minus the global weights it
    received); the collector decodes before the strategy aggregates, so every strategy works."""

    uplink: Literal["none", "fp16", "int8", "topk", "stc"] = Field(
        default="none",
        description="none: plain float arrays; fp16: 2x smaller, relative error 2^-11; int8: ~4x smaller, error "
        "half a step of max|delta|/127 per tensor; topk: the `ratio` largest delta values (fp16) and their "
        "positions, ~4 bytes each; stc: the same top values as +-their mean magnitude, 1 bit a sign.",
    )
    ratio: float = Field(
        default=0.01, gt=0, le=1, description="topk/stc: the share of each tensor's values sent per round."
    )
    error_feedback: bool = Field(
        default=True,
        description="Keep what a lossy codec left out at the site (its state directory) and add it to the next delta.",
    )
    downlink: Literal["none", "fp16"] = Field(
        default="none", description="fp16: the global weights go to the sites in half precision (2x smaller)."
    )


class TaskIn(StrictBody):
    """A training plan. Unknown fields are refused (422, each named): a typo must not become a
    different experiment."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": "digits-fedavg",
                    "model": {"model_name": "digits", "model_version": "v1"},
                    "strategy": {"strategy_name": "fedavg"},
                    "strategy_conf": {"fraction_fit": 1.0},
                    "transformations": [{"id": "flrepo.standard_scaling", "parameters": {}}],
                    "rounds": 5,
                    "min_participants": 3,
                    "participants_ratio": 1.0,
                    "round_timeout": 120,
                    "training": {"epochs": 2, "batch_size": 32, "learning_rate": 0.1},
                    "configuration_id": "1",
                }
            ]
        },
    )

    task_id: Identifier | None = Field(default=None, description="Generated when left out.")
    model: ModelRef
    strategy: StrategyRef
    strategy_conf: SafeDict = Field(default_factory=dict, description="Keyword overrides for the strategy.")
    transformations: list[TransformationRef] = Field(default_factory=list, max_length=64)
    rounds: int = Field(default=3, ge=1, le=10_000)
    min_participants: int | None = Field(
        default=None, ge=1, le=100_000, description="Participants needed; unset: the strategy's own minimums."
    )
    participants_ratio: float | None = Field(
        default=None, gt=0, le=1, description="Share of participants per round; unset: the strategy's own fractions."
    )
    round_timeout: float | None = Field(default=None, gt=0, le=86_400, description="Seconds per round.")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    configuration_id: Identifier = "1"
    output_model_version: Identifier | None = Field(
        default=None,
        description="The version under which the trained model is registered (same name and library as the "
        "task's model, its native file); default `{model_version}-{task_id}`.",
    )
    publish: Literal["last", "best"] = Field(
        default="last", description="Publish the last round's model, or the round with the lowest validation loss."
    )
    checkpoints_kept: int = Field(
        default=3, ge=1, le=1000, description="The newest checkpoints kept (the best one is kept besides them)."
    )
    heartbeat_timeout: float = Field(
        default=DEFAULT_HEARTBEAT_TIMEOUT,
        ge=5,
        le=86_400,
        description="Seconds without a heartbeat from the running task's collector after which the service "
        "marks it Failed (reason CollectorLost).",
    )
    participants_timeout: float = Field(
        default=300,
        gt=0,
        le=7 * 86_400,
        description="Seconds the collector waits for the participants it needs (min_participants, else the "
        "strategy's minimum) before the task fails (reason NotEnoughParticipants).",
    )
    participant_keys: list[ParticipantKey] = Field(
        default_factory=list,
        max_length=10_000,
        description="Message-API runtime: OpenSSH public keys (ECDSA, NIST curve) of the SuperNodes allowed to "
        "join; any other is refused. Empty: no SuperNode authentication.",
    )
    collector_keys: list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        max_length=100,
        description="Ids of the API keys allowed to claim the task as its collector (an admin key always may); "
        "empty: any writer key.",
    )
    discovery_key: DiscoveryKey | None = Field(
        default=None,
        description="`id:base64` of the Ed25519 public key that must sign the collector's discovery record "
        "(server_address, server_ca); unset: any key the sites trust (FLREPO_TRUSTED_KEYS).",
    )
    compression: CompressionSpec | None = Field(
        default=None, description="Compression of the model updates each way; unset: none (plain float arrays)."
    )
    privacy: PrivacySettings | None = Field(
        default=None,
        description="Differential privacy (`dp`, accounted: ε per round, in the published model's meta.privacy), "
        "secure aggregation (`secure_aggregation`, Flower's SecAgg+, Message-API strategies only), or both "
        "(client-side DP modes only).",
    )


class CancelIn(StrictBody):
    """Why a task is cancelled (optional)."""

    message: Text | None = None


class Heartbeat(BaseModel):
    """The last sign of life of the task's collector: any status report it sends."""

    time: datetime
    round: int = Field(default=0, ge=0)
    collector: str | None = Field(default=None, description="Who reported (host and process).")


class Condition(BaseModel):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime


class Participant(StrictBody):
    node_id: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    samples: int = Field(default=0, ge=0)
    last_round: int = Field(default=0, ge=0)
    metrics: MetricValues = Field(default_factory=dict)


class RoundRecord(StrictBody):
    round: int = Field(ge=1)
    loss: float | None = None
    metrics: MetricValues = Field(default_factory=dict)
    participants: int = Field(default=0, ge=0)
    failures: int = Field(default=0, ge=0)
    duration_s: float | None = Field(default=None, ge=0)
    # The round's traffic, all sites together (flrepo.fl.core.compression.Traffic): bytes as sent and
    # as plain float arrays would have been, and the codec milliseconds of the collector and the sites.
    bytes_up: int | None = Field(default=None, ge=0, description="Sites to collector, as sent.")
    bytes_up_raw: int | None = Field(default=None, ge=0, description="The same as plain arrays.")
    bytes_down: int | None = Field(default=None, ge=0, description="Collector to sites, as sent.")
    bytes_down_raw: int | None = Field(default=None, ge=0, description="The same as plain arrays.")
    encode_ms: float | None = Field(default=None, ge=0)
    decode_ms: float | None = Field(default=None, ge=0)
    epsilon: float | None = Field(
        default=None, ge=0, description="Differential privacy: ε spent after this round, at the task's δ."
    )


class ResultRef(StrictBody):
    model_name: str
    model_version: str
    training_id: str
    output_model_version: str | None = Field(default=None, description="The trained model's version.")


class BestRound(BaseModel):
    """The round whose aggregated weights had the lowest validation loss so far."""

    round: int = Field(ge=1)
    loss: float
    metrics: MetricValues = Field(default_factory=dict)


class DiscoverySignature(StrictBody):
    """An Ed25519 signature (flrepo.signing) of a task's discovery record: kind `discovery`, name the task id,
    sha256 and size of the record's canonical bytes (flrepo.fl.discovery)."""

    signature: Annotated[str, StringConstraints(max_length=200)]
    key_id: Annotated[str, StringConstraints(max_length=128)]
    algorithm: Literal["ed25519"] = "ed25519"
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    size: int = Field(ge=0, le=1_000_000)


class StatusUpdate(StrictBody):
    """What a collector reports; every field is optional and only given ones change."""

    phase: Phase | None = None
    reason: Annotated[str, StringConstraints(max_length=128)] | None = None
    message: Text | None = None
    current_round: int | None = Field(default=None, ge=0)
    participants: list[Participant] | None = Field(default=None, max_length=10_000)
    round: RoundRecord | None = Field(default=None, description="Appended to the history.")
    round_records: list[RoundRecord] | None = Field(
        default=None,
        max_length=1_000,
        description="Several rounds at once, oldest first, appended to the history before `round`: a collector "
        "whose rounds end faster than it writes reports them together.",
    )
    result: ResultRef | None = None
    strategy_settings: SafeDict | None = Field(
        default=None, description="What the collector ran the strategy with, and where each value came from."
    )
    resumed_from_round: int | None = Field(
        default=None, ge=0, description="The checkpoint a restarted collector resumed."
    )
    runtime: Literal["legacy", "message"] | None = Field(
        default=None, description="legacy: Flower's gRPC server (aerOS); message: Flower's SuperLink/SuperNode."
    )
    server_address: Address | None = Field(
        default=None, description="Where participants connect (HOST:PORT), as the collector advertises it."
    )
    server_ca: PemCertificates | None = Field(
        default=None, description="The PEM certificate(s) participants trust for server_address (TLS)."
    )
    collector: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="Who reports (host and process); recorded with the heartbeat."
    )
    discovery_signature: DiscoverySignature | None = Field(
        default=None,
        description="The collector's Ed25519 signature of its discovery record (runtime, server_address, "
        "server_ca); local executions refuse a record without a valid one.",
    )
    active: int | None = Field(default=None, ge=0, description="Participants connected now.")
    succeeded: int | None = Field(default=None, ge=0, description="Participants whose last round succeeded.")
    failed: int | None = Field(default=None, ge=0, description="Participants whose last round failed.")


class ClaimIn(StrictBody):
    """A collector starting for a task. Without `token` the claim succeeds only when no live claim holds
    the task; with the token of an earlier claim (a restarted collector) it succeeds at once."""

    collector: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="Who claims (host and process)."
    )
    token: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="The task token this collector was given before, to re-claim after a restart."
    )


class ClaimedBy(BaseModel):
    """Who holds the task's claim (its token is never shown again)."""

    collector: str | None = None
    key_id: str | None = Field(default=None, description="The API key that claimed it.")
    time: datetime


class ClaimOut(BaseModel):
    """The claim: `token` goes in the `X-Task-Token` header of every status report, heartbeat, checkpoint
    and publication of the task's output. It is stored hashed; keep it (a restarted collector re-claims
    with it)."""

    task_id: str
    token: str
    claimed_by: ClaimedBy
    lapses_after_s: float = Field(description="Seconds without a heartbeat after which another collector may claim.")


class SiteReportIn(StrictBody):
    """A local execution's own record in a task: how it stands, and why when it cannot take part."""

    site: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    state: Literal["joining", "failed", "done"]
    reason: Annotated[str, StringConstraints(max_length=128)] | None = None
    message: Text | None = None


class SiteReport(SiteReportIn):
    key_id: str | None = Field(default=None, description="The API key that reported it.")
    time: datetime


class Pin(BaseModel):
    """What one referenced file was when the task was created."""

    sha256: str | None = Field(default=None, description="Its sha256; null: it had no file then.")
    size: int | None = None


class TransformationPin(Pin):
    id: str


class Pins(BaseModel):
    """The exact files a task was created with: its training collector and local executions load these
    and refuse anything else (an older signed version put back, a replacement made since)."""

    model: Pin
    strategy: Pin
    # A list, not an object by id: ids contain dots, which a stored key cannot.
    transformations: list[TransformationPin] = Field(default_factory=list)


class TaskOut(StoredView, TaskIn):
    """A task as stored, with every setting in force (defaults included) and its live status. Fields
    refused today but stored by an older server are left out (flrepo.schemas.strict.StoredView)."""

    model_config = ConfigDict(extra="ignore")

    task_id: str
    pins: Pins | None = Field(default=None, description="Pinned sha256 digests (null for tasks made before pinning).")
    training: StoredTrainingConfig = Field(default_factory=StoredTrainingConfig)
    phase: Phase
    conditions: list[Condition] = Field(default_factory=list)
    start_time: datetime | None = None
    completion_time: datetime | None = None
    current_round: int = 0
    participants: list[Participant] = Field(default_factory=list)
    history: list[RoundRecord] = Field(
        default_factory=list, description="The most recent round records (see ?history= and /tasks/{id}/history)."
    )
    history_total: int = Field(default=0, description="Round records kept (older ones are dropped).")
    result: ResultRef | None = None
    best: BestRound | None = Field(default=None, description="Kept up to date from the checkpoints.")
    strategy_settings: dict[str, Any] | None = None
    resumed_from_round: int | None = None
    runtime: str | None = None
    server_address: str | None = None
    server_ca: str | None = None
    heartbeat: Heartbeat | None = None
    claimed_by: ClaimedBy | None = Field(default=None, description="The collector that claimed the task.")
    discovery_signature: DiscoverySignature | None = None
    site_reports: list[SiteReport] = Field(
        default_factory=list, description="The local executions' own records (the latest per site and key)."
    )
    active: int = 0
    succeeded: int = 0
    failed: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @model_validator(mode="after")
    def _output_version_in_force(self) -> TaskOut:
        # What runs is what the user sees: the version the trained model will get, not "null".
        if self.output_model_version is None:
            self.output_model_version = output_version(self.model_dump(include={"model", "task_id"}))
        return self


def output_version(task: dict[str, Any]) -> str:
    """The version the trained model is registered under: `output_model_version`, by default
    `{model_version}-{task_id}`."""
    return str(task.get("output_model_version") or f"{task['model']['model_version']}-{task['task_id']}")


# --- checkpoints ----------------------------------------------------------------------------


class CheckpointIn(StrictBody):
    """The aggregated weights after a round (their file is uploaded separately, as .npz)."""

    round: int = Field(ge=1, le=10_000)
    loss: float | None = Field(
        default=None, allow_inf_nan=False, description="The round's aggregated validation loss (finite)."
    )
    metrics: MetricValues = Field(default_factory=dict)


class CheckpointOut(StoredView, FileInfo, CheckpointIn):
    model_config = ConfigDict(extra="ignore")

    task_id: str
    weights_id: str | None = None
