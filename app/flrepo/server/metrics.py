"""Prometheus metrics of one application (a registry per app, so several apps in one process, as in
the tests, do not collide), following Prometheus' conventions: no `_created` twins, the process and
GC collectors beside the service's own series, sizes as histograms by route template."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

# A `_created` series per counter and histogram doubles what is scraped and stored for a value that
# Prometheus itself does not use (process-wide switch in prometheus_client).
disable_created_metrics()

# Bodies from an empty 204 to multi-GB model files: powers of 4 from 64 B to 16 GiB.
SIZE_BUCKETS = tuple(float(64 * 4**i) for i in range(15))


@dataclass
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    in_flight: Gauge
    request_size: Histogram
    response_size: Histogram
    bytes_in: Counter
    bytes_out: Counter
    db_errors: Counter

    @classmethod
    def create(cls) -> Metrics:
        registry = CollectorRegistry()
        # process_* (CPU, memory, open files) and python_gc_* of this process, in the app's own registry.
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
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
            in_flight=Gauge("flrepo_http_requests_in_flight", "HTTP requests being served", registry=registry),
            request_size=Histogram(
                "flrepo_http_request_size_bytes",
                "Request body bytes received, by route template",
                ["method", "route"],
                registry=registry,
                buckets=SIZE_BUCKETS,
            ),
            response_size=Histogram(
                "flrepo_http_response_size_bytes",
                "Response body bytes sent, by route template",
                ["method", "route"],
                registry=registry,
                buckets=SIZE_BUCKETS,
            ),
            bytes_in=Counter("flrepo_uploaded_bytes", "Request body bytes received", registry=registry),
            bytes_out=Counter("flrepo_downloaded_bytes", "Response body bytes sent", registry=registry),
            db_errors=Counter("flrepo_database_errors", "Database errors by kind", ["kind"], registry=registry),
        )
