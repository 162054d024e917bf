"""Prometheus metrics of the ranking API: requests, latency, fallbacks by kind, arms, served versions, feedback.

With several workers, `graphrec serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory, sets
GRAPHREC_METRICS_MULTIPROCESS=1, and /metrics aggregates every worker's values (prometheus_client's multiprocess
mode). The variable of our own is needed because Feast sets PROMETHEUS_MULTIPROC_DIR on import in every process.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_ENV = "GRAPHREC_METRICS_MULTIPROCESS"
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """The API's metrics in their own registry (several apps in one process do not collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = os.environ.get(MULTIPROCESS_ENV) == "1"
        kwargs = {"registry": self.registry}
        self.requests = Counter(
            "graphrec_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], **kwargs
        )
        self.latency = Histogram(
            "graphrec_request_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            **kwargs,
        )
        self.pages = Counter("graphrec_pages", "ranked pages by arm and fallback", ["arm", "fallback"], **kwargs)
        self.fallbacks = Counter("graphrec_fallbacks", "pages served by a fallback, by kind", ["kind"], **kwargs)
        self.feedback = Counter("graphrec_feedback", "feedback actions recorded", ["action"], **kwargs)
        self.reloads = Counter("graphrec_reloads", "reload attempts by outcome", ["outcome"], **kwargs)
        gauge = {"multiprocess_mode": "livemostrecent"} if self.multiprocess else {}
        self.versions = Gauge(
            "graphrec_serving_version",
            "1 for the (arm, model version, embedding version) being served",
            ["arm", "model_version", "embedding_version"],
            **kwargs,
            **gauge,
        )
        self.served: set[tuple[str, str, str]] = set()

    def observe_page(self, page) -> None:
        self.pages.labels(page.arm, page.fallback or "none").inc()
        if page.fallback:
            self.fallbacks.labels(page.fallback).inc()

    def serving(self, generation) -> None:
        """Mark the generation's versions as served (and the previous ones as not)."""
        current = {(a.name, a.model_version, str(generation.embedding_version)) for a in generation.arms.values()}
        for labels in self.served - current:
            self.versions.labels(*labels).set(0)
        for labels in current:
            self.versions.labels(*labels).set(1)
        self.served = current

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
