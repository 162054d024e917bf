"""Settings of the ranking API: plain dataclasses, so `graphrec serve --help` shows them without loading the app."""

from __future__ import annotations

from dataclasses import dataclass, field

from graphrec.errors import ConfigError, at_least_zero, check_settings, positive
from graphrec.store.config import FeatureStoreConfig


@dataclass
class LimitsConfig:
    """Size limits of a rank request (larger ones are refused with 422 and the limit in the message).

    Args:
        max_candidates: candidate modules per request.
        max_slots: slots per request.
        max_recent_events: fresh session events per request.
        max_exclude: excluded modules per request.
    """

    max_candidates: int = 5000
    max_slots: int = 200
    max_recent_events: int = 500
    max_exclude: int = 5000

    def __post_init__(self) -> None:
        check_settings("serve.limits", self, {name: (positive, "a positive integer") for name in vars(self)})


@dataclass
class ExperimentConfig:
    """Rankers served side by side: each user falls into one arm by a stable hash of (salt, user id).

    Args:
        arms: arm name -> ranker artifact directory (each must fit the live embedding version), beside the
            `default` arm (serve.ranker).
        shares: arm name -> share of users, for `default` and each arm (the shares sum to 1).
        salt: changes the assignment; keep it for the experiment's duration.
    """

    arms: dict[str, str] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    salt: str = "graphrec"

    def __post_init__(self) -> None:
        if not self.arms:
            return
        if set(self.shares) != {"default", *self.arms}:
            raise ConfigError(
                f"serve.experiment.shares must name `default` and every arm ({sorted(self.arms)}), not "
                f"{sorted(self.shares)}"
            )
        if any(not 0 <= s <= 1 for s in self.shares.values()) or abs(sum(self.shares.values()) - 1) > 1e-6:
            raise ConfigError(f"serve.experiment.shares must be in [0, 1] and sum to 1, not {self.shares}")


@dataclass
class ServeConfig:
    """The ranking API.

    Args:
        host: address to bind (loopback by default; put a proxy in front for anything else).
        port: port to bind.
        workers: uvicorn worker processes (each loads the models; /metrics aggregates them).
        ranker: the ranker artifact directory served (the `default` arm); null: the ranker `graphrec run` published
            with the store's LATEST version (the live pair; a reload follows the next published pair).
        validated: the validated tables the request-time features are indexed from; default: the ranker's own.
        store: the embedding store (LATEST is served; its online store is read per request).
        feature_store: the online store settings (as in `graphrec run`'s export.feature_store).
        online_read: `direct` reads Redis with one pipelined call (Feast's layout and keys), `feast` goes through
            Feast's client; SQLite is always read through Feast.
        retry_online_after_s: after an online-store failure, serve from the local copy this long before trying
            the online store again.
        clock: the time of a request without `context.timestamp`: `now`, or `data_end` (the newest indexed event or
            impression: a replay of the log's last moment, for historical or generated data whose modules have all
            ended by now).
        slots: modules returned when a request does not say.
        fresh_embeddings: embed a user with the request's recent item events added to their graph edges (the
            GNN's inductive aggregation, from the live version's inductive state); off: recent events feed the
            behaviour features only.
        reasons: attach reasons to each returned module.
        exploration: share of slots filled by softmax sampling over the remaining scores instead of the top one
            (0: off); each module's propensity is logged.
        temperature: softmax temperature of exploration, over the relevance logits.
        feedback: directory of the feedback database (hide / more like this), durable across restarts.
        impression_log: directory the served pages are appended to as Parquet parts in the impressions contract
            (null: not logged).
        log_flush_rows: served impressions buffered before a part is written.
        log_flush_seconds: longest a served impression waits in the buffer.
        admin_token: bearer token of /admin/reload; default: the environment variable GRAPHREC_ADMIN_TOKEN
            (without either, /admin/reload is refused).
        experiment: rankers served side by side by user hash (empty: the `default` arm only).
        limits: request size limits.
        similar_cosine: module embeddings at least this close count as similar for hide_similar / more_like_this.
        boost: logit added to modules similar to one the user asked more of.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    ranker: str | None = None
    validated: str | None = None
    store: str = "artifacts/store"
    feature_store: FeatureStoreConfig = field(default_factory=FeatureStoreConfig)
    online_read: str = "direct"
    retry_online_after_s: float = 1.0
    clock: str = "now"
    slots: int = 20
    fresh_embeddings: bool = True
    reasons: bool = True
    exploration: float = 0.0
    temperature: float = 1.0
    feedback: str | None = "artifacts/serving/feedback"
    impression_log: str | None = "artifacts/serving/impressions"
    log_flush_rows: int = 5000
    log_flush_seconds: float = 5.0
    admin_token: str | None = None
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    similar_cosine: float = 0.8
    boost: float = 1.0

    def __post_init__(self) -> None:
        check_settings(
            "serve",
            self,
            {
                "port": (lambda v: 0 <= v <= 65535, "a port number"),
                "workers": (positive, "a positive integer"),
                "online_read": (lambda v: v in ("direct", "feast"), "direct or feast"),
                "retry_online_after_s": (at_least_zero, "zero or more"),
                "clock": (lambda v: v in ("now", "data_end"), "now or data_end"),
                "slots": (positive, "a positive integer"),
                "exploration": (lambda v: v is not None and 0 <= v <= 1, "in [0, 1]"),
                "temperature": (positive, "positive"),
                "log_flush_rows": (positive, "a positive integer"),
                "log_flush_seconds": (positive, "positive"),
                "similar_cosine": (lambda v: v is not None and -1 <= v <= 1, "in [-1, 1]"),
                "boost": (at_least_zero, "zero or more"),
            },
        )
        if "default" in self.experiment.arms:
            raise ConfigError("serve.experiment.arms: `default` is the name of serve.ranker's arm; pick another")
