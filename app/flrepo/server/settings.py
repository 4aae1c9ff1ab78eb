"""Service settings, read from environment variables prefixed ``FLREPO_``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; each field is the env var ``FLREPO_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FLREPO_", extra="ignore")

    mongodb_url: str = Field(
        default="mongodb://localhost:27017",
        description="MongoDB connection string (credentials, replica set, options).",
    )
    db_name: str = Field(default="repository", description="Database holding the metadata collections.")
    gridfs_db_name: str = Field(default="repository_grid", description="Database holding the GridFS buckets.")
    host: str = Field(default="0.0.0.0", description="Bind address of `flrepo serve`.")
    port: int = Field(default=9012, ge=1, le=65535, description="Bind port of `flrepo serve`.")
    max_upload_bytes: int = Field(
        default=8 * 1024**3, ge=0, description="Largest accepted file upload in bytes (413 above it)."
    )
    list_cap: int = Field(default=1000, ge=1, description="Most items a list returns, and the default page size.")
    log_level: str = Field(default="INFO", description="Python logging level.")
    db_timeout_ms: int = Field(
        default=3000,
        ge=100,
        description="How long a request waits for the database (to be found, to connect, for each reply) before 503.",
    )
    db_read_retry_s: float = Field(
        default=30,
        ge=0,
        description="How long a file download retries chunk reads that fail or time out (counted from the last "
        "chunk received) before it is given up: 503 if nothing was sent yet, else the connection is closed. "
        "A slow store that still answers pings is waited for. File uploads likewise: a write of chunks is "
        "waited for while the store answers pings and retried for this long before the upload gets a 503.",
    )
    index_check_interval_s: float = Field(
        default=30,
        ge=0,
        description="Seconds between checks that the indexes exist (missing ones are re-created, with a "
        "warning; /ready says 503 while a unique index is missing); 0 disables.",
    )
    api_keys_file: Path | None = Field(
        default=None, description="JSON or YAML list of {id, role, sha256} API key entries; unset: no keys."
    )
    anonymous_role: str | None = Field(
        default=None,
        pattern="^(none|reader|writer|admin)$",
        description="Role of requests without a key (default: none when keys are configured, else admin).",
    )
    trusted_keys: str = Field(
        default="",
        description="Public keys (`id:base64,...`, as `flrepo keys signing-create` prints them) the web console "
        "checks stored strategies' and transformations' signatures with (GET /signatures/{kind}).",
    )
    trusted_keys_file: Path | None = Field(
        default=None,
        description="A file of such keys, one `id:base64` a line (the .pub files signing-create writes).",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest JSON request body in bytes (413 above it)."
    )
    log_format: str = Field(default="json", pattern="^(json|text)$", description="json or text log lines.")
    cors_origins: list[str] = Field(
        default_factory=list, description='Origins allowed by CORS, as a JSON list (e.g. ["https://ui.example"]).'
    )
    sweep_interval_s: float = Field(
        default=3600, ge=0, description="Seconds between orphan-file sweeps (also one at start-up); 0 disables."
    )
    sweep_grace_s: float = Field(
        default=3600, ge=0, description="Only GridFS data untouched for this long is swept (protects live uploads)."
    )
    task_check_interval_s: float = Field(
        default=5,
        ge=0,
        description="Seconds between checks for Running tasks whose collector stopped heartbeating (they are "
        "marked Failed, reason CollectorLost, after their heartbeat_timeout); 0 disables.",
    )
    upload_expiry_s: float = Field(
        default=86400,
        gt=0,
        description="Resumable (tus) uploads untouched for this many seconds expire; the sweep removes them.",
    )
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request head (request line and headers) in bytes; larger ones get 400.",
    )
    max_headers: int = Field(default=100, ge=8, le=10_000, description="Most header lines a request may send (431).")
    header_timeout_s: float = Field(
        default=10,
        gt=0,
        le=300,
        description="Seconds a connection has to send a complete request head (408 and closed after).",
    )
    idle_timeout_s: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="Seconds of silence after which a request body (or a client not reading) is given up.",
    )
    task_history_rounds: int = Field(
        default=1000,
        ge=1,
        le=10_000,
        description="Round records a task keeps (the oldest are dropped); GET /tasks/{id}/history pages them.",
    )
    task_record_bytes: int = Field(
        default=8 * 1024,
        ge=512,
        le=1024 * 1024,
        description="Largest round record of a status report, as JSON bytes (413 above it).",
    )
    task_report_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest status report as a whole, as JSON bytes (413 above it); with the kept rounds and "
        "coalesced conditions it bounds a task document.",
    )
    upload_max_open: int = Field(
        default=16, ge=1, description="Open resumable (tus) uploads one API key may have at once (429 above it)."
    )
    upload_max_reserved_bytes: int = Field(
        default=32 * 1024**3,
        ge=0,
        description="Bytes the open resumable uploads of one API key may announce in total (507 above it).",
    )
    restore_max_manifest_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="`flrepo restore`: largest manifest (all documents as JSON) it reads into memory.",
    )
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without an API key (else it needs the reader role)."
    )
    gridfs_chunk_bytes: int = Field(
        default=255 * 1024, ge=1024, le=15 * 1024 * 1024, description="GridFS chunk size for new files."
    )

    @model_validator(mode="before")
    @classmethod
    def _aeros_fallback(cls, data: object) -> object:
        # aerOS deployments configure the database with DB_ADDRESS / DB_PORT; honour them when
        # FLREPO_MONGODB_URL is not set so their ConfigMaps keep working.
        if isinstance(data, dict) and "mongodb_url" not in data and "FLREPO_MONGODB_URL" not in os.environ:
            address = os.environ.get("DB_ADDRESS")
            if address:
                port = os.environ.get("DB_PORT", "27017")
                data = {**data, "mongodb_url": f"mongodb://{address}:{port}"}
        return data


@lru_cache
def get_settings() -> Settings:
    return Settings()
