"""Prometheus metrics of one application (a registry per app, so several apps in one process, as in
the tests, do not collide)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    bytes_in: Counter
    bytes_out: Counter
    db_errors: Counter

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            requests=Counter("flrepo_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry),
            latency=Histogram(
                "flrepo_http_request_duration_seconds",
                "Time to the end of the response",
                ["method", "route"],
                registry=registry,
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            ),
            bytes_in=Counter("flrepo_uploaded_bytes", "Request body bytes received", registry=registry),
            bytes_out=Counter("flrepo_downloaded_bytes", "Response body bytes sent", registry=registry),
            db_errors=Counter("flrepo_database_errors", "Database errors by kind", ["kind"], registry=registry),
        )
