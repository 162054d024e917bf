"""The ranking service behind the API: a request in, an ordered page out, and never an exception out.

A `Generation` is everything one published pair needs to answer requests: the request-time feature index of the
ranker's validated tables (`graphrec.rank.online.FeatureState`), each arm's ranker with the live embedding
version's module vectors, the last good local copy of the user vectors, and the online-store reader. Reloading
builds a new generation beside the serving one and swaps a single reference, so a request in flight finishes on
the generation it started with. A pair whose ranker does not fit the live embedding space (`check_compatible`) is
refused and the serving one stays.

Scores are the ranker's P(click | seen) of the request-time features (the position tower is not used at serving,
so the order is not a mirror of past placement). Where the online store fails, the user vector comes from the local
copy and the page is flagged `degraded`; where anything else fails, the page is the popularity order, flagged
`degraded`; an unknown user without events gets the popularity order flagged `cold_start`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphrec.errors import GraphrecError
from graphrec.rank.artifact import load_ranker, read_ranker_info
from graphrec.rank.config import RankFeatureConfig
from graphrec.rank.online import FeatureState, RecentEvents, coerce_id
from serving.config import ServeConfig
from serving.feedback import adjust_for_feedback

log = logging.getLogger("graphrec.serving")

US = 1_000_000
FLAGS = ("has_user_embedding", "has_module_embedding")
# Feature groups a reason can name; a score is attributed to them by occlusion (each group set to its training mean).
GROUPS = {
    "category": ("user_category_events", "user_category_share"),
    "featured": ("user_featured_events", "user_featured_any"),
    "session": ("session_item_events", "session_category_share", "session_featured_events", "session_featured_share"),
    "brand": ("user_brand_share",),
    "popularity": ("module_impressions", "module_clicks", "module_coec"),
    "fresh": ("module_days_since_first_impression", "module_age_days"),
    "history": ("user_module_impressions", "user_module_clicks", "user_module_views"),
    "context": ("hour_sin", "hour_cos", "weekday"),
}
MIN_CONTRIBUTION = 0.05  # logit a group must add to be named as a reason


class ServingError(GraphrecError):
    """A ranker, store or index cannot be served (the message says which and why)."""


@dataclass
class Page:
    """One ranked page: modules in order with scores, reasons and propensities, and what served it."""

    request_id: str
    user_id: Any
    modules: list[dict[str, Any]]
    model_version: str | None
    embedding_version: str | None
    arm: str
    fallback: str | None
    timestamp: datetime
    device: str | None = None
    session_id: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class Arm:
    """A ranker with the live embedding version's module vectors."""

    name: str
    path: str
    ranker: Any
    info: dict[str, Any]
    model_version: str
    columns: np.ndarray  # [ranker features] column of each ranker feature in the state's rows (-1, -2: the flags)
    group_columns: dict[str, np.ndarray]  # reason group -> columns of the network's input rows
    reason_groups: list[str]  # the groups a reason can name (those with columns in this ranker)
    reason_keep: torch.Tensor  # [reason groups, width] 1, and 0 on the group's columns: the occlusion masks
    module_vectors: np.ndarray | None  # [state modules, dim]
    module_known: np.ndarray  # [state modules] the version holds the module


class Generation:
    """A published pair loaded for serving: features index, arms, embedding version, local and online vectors."""

    def __init__(self, config: ServeConfig) -> None:
        started = time.perf_counter()
        self.config = config
        self.ranker_path, pinned = config.ranker, None
        if self.ranker_path is None:  # the live pair: LATEST and the ranker published with it, read once
            from graphrec.store.pairs import require_paired_ranker
            from graphrec.store.versions import StoreError

            try:
                pinned, path = require_paired_ranker(config.store)
            except StoreError as exc:
                raise ServingError(str(exc)) from None
            self.ranker_path = str(path)
        arms = {"default": self.ranker_path, **config.experiment.arms}
        infos = {name: read_ranker_info(path) for name, path in arms.items()}
        first = infos["default"]
        validated = config.validated or first.get("data", {}).get("validated")
        if not validated or not Path(validated).exists():
            raise ServingError(
                f"{self.ranker_path}: its validated tables ({validated}) are not there; pass --validated, the "
                "directory the ranker was trained on (the request-time features are computed from it)"
            )
        feature_config = RankFeatureConfig(**_feature_settings(first))
        for name, info in infos.items():
            if _feature_settings(info) != _feature_settings(first):
                raise ServingError(f"arm {name}: its feature settings differ from the default arm's; serve it alone")
        self.state = FeatureState.from_validated(validated, feature_config)
        self.validated = str(validated)
        self.embedding_version, self.embedding_space = None, None
        self.users: dict[Any, int] = {}
        self.user_vectors: np.ndarray | None = None
        self.online = None
        self.inductive = None
        self.module_matrix: np.ndarray | None = None
        needs_embeddings = any(info["architecture"]["embedding_dim"] for info in infos.values())
        if needs_embeddings:
            self._load_embeddings(config, infos, pinned)
        self.arms = {name: self._arm(name, arms[name]) for name in arms}
        self.popularity = self.state.module_popularity(self.state.data_end_us + 1)
        self.loaded_at = datetime.now(UTC)
        self.seconds = time.perf_counter() - started
        log.info(
            "serving %s with embedding version %s: %d users, %d modules indexed (%.1fs)",
            ", ".join(f"{a.name}={a.model_version}" for a in self.arms.values()),
            self.embedding_version,
            len(self.state.user_index),
            self.state.n_modules,
            self.seconds,
        )

    def _load_embeddings(self, config: ServeConfig, infos: dict[str, dict], pinned: str | None = None) -> None:
        from graphrec.store.online import OnlineEmbeddings
        from graphrec.store.versions import StoreError, check_compatible, load_version, require_latest

        try:
            version = pinned or require_latest(config.store)
            for name, info in infos.items():
                trained = (info.get("embeddings") or {}).get("live_version")
                if info["architecture"]["embedding_dim"] and trained:
                    try:
                        check_compatible(config.store, trained, version)
                    except StoreError as exc:
                        path = self.ranker_path if name == "default" else config.experiment.arms[name]
                        raise ServingError(f"arm {name} ({path}): {exc}") from None
            vectors = load_version(config.store, version)
        except StoreError as exc:
            raise ServingError(f"{config.store}: {exc}") from None
        self.embedding_version = version
        self.embedding_space = vectors.info["manifest"].get("space")
        self.users = {v: i for i, v in enumerate(vectors.ids["user"].to_list())} if "user" in vectors.ids else {}
        self.user_vectors = vectors.vectors.get("user")  # the last good local copy, served when the store fails
        dim = vectors.dim
        matrix = np.zeros((self.state.n_modules, dim), np.float32)
        known = np.zeros(self.state.n_modules, bool)
        if "content" in vectors.ids:
            for row, content_id in enumerate(vectors.ids["content"].to_list()):
                index = self.state.module_of(content_id)
                if index is not None:
                    matrix[index], known[index] = vectors.vectors["content"][row], True
        self.module_matrix, self.module_known = matrix, known
        self.inductive = None
        if config.fresh_embeddings:
            from graphrec.store.versions import load_inductive

            self.inductive = load_inductive(config.store, version)
            if self.inductive is None:
                log.warning("%s has no inductive state: recent events feed the features, not the embedding", version)
            else:
                self.kit_items = (
                    {v: i for i, v in enumerate(vectors.ids["item"].to_list())} if "item" in vectors.ids else {}
                )
                self.kit_behaviours = {name: b for b, name in enumerate(self.inductive.behaviours)}
        backend = (
            "redis" if config.feature_store.online_store == "redis" and config.online_read == "direct" else "feast"
        )
        try:
            # The space of the version read above, not LATEST's again: a publish in between must not mix spaces.
            space = self.embedding_space
            self.online = OnlineEmbeddings(config.store, config.feature_store, backend, expect_space=space)
        except Exception as exc:  # the online store is down at start: serve the local copy, flagged degraded
            log.warning("online store unavailable at load (%s); serving the local copy until it answers", exc)
            self.online = None

    def _arm(self, name: str, path: str) -> Arm:
        ranker, info = load_ranker(path)
        torch.set_num_threads(1)  # one request at a time per worker: threads add latency, not throughput
        names = info["features"]["names"]
        columns = []
        for feature in names:
            if feature in FLAGS:
                columns.append(-1 - FLAGS.index(feature))
            elif feature in self.state.names:
                columns.append(self.state.names.index(feature))
            else:
                raise ServingError(f"arm {name} ({path}): feature {feature!r} is not one this graphrec computes")
        dim = ranker.embedding_dim
        if dim and (self.module_matrix is None or self.module_matrix.shape[1] != dim):
            raise ServingError(
                f"arm {name} ({path}): the ranker takes {dim}-dim embeddings, the live version has "
                f"{None if self.module_matrix is None else self.module_matrix.shape[1]}"
            )
        group_columns = {
            group: np.array([names.index(f) for f in features if f in names], np.int64)
            for group, features in GROUPS.items()
        }
        if dim:
            # The network's input: dense features, user, module, their dot product, their product.
            width = len(names) + 2 * dim + 1 + (dim if ranker.config.embedding_products else 0)
            taste = list(range(len(names), width)) + [names.index(f) for f in FLAGS if f in names]
            group_columns["taste"] = np.array(taste, np.int64)
        reason_groups = [group for group, columns in group_columns.items() if len(columns)]
        reason_keep = torch.ones(len(reason_groups), ranker.input_width)
        for g, group in enumerate(reason_groups):
            reason_keep[g, torch.from_numpy(group_columns[group])] = 0.0
        digest = hashlib.sha256(Path(path, "ranker.safetensors").read_bytes()).hexdigest()[:12]
        return Arm(
            name=name,
            path=str(path),
            ranker=ranker,
            info=info,
            model_version=f"{Path(path).name}-{digest}",
            columns=np.array(columns, np.int64),
            group_columns=group_columns,
            reason_groups=reason_groups,
            reason_keep=reason_keep,
            module_vectors=self.module_matrix if dim else None,
            module_known=self.module_known if dim else np.zeros(self.state.n_modules, bool),
        )


def _feature_settings(info: dict[str, Any]) -> dict[str, Any]:
    settings = dict(info["features"]["config"])
    settings.setdefault("content_vectors", ())  # rankers trained before the content similarity features had none
    settings.setdefault("shopper_feedback", False)  # nor had those trained before the feedback features
    for key in ("windows_days", "devices", "content_vectors"):
        settings[key] = tuple(settings[key])
    return settings


class OnlineReader:
    """The user-vector read with a breaker: after a failure the local copy serves for `retry_after_s` before the
    online store is tried again, so an outage costs one failed call per interval, not one per request.

    `down` is the store's state as the reads last saw it: set by a failed read, cleared only by a read that
    succeeds and that started after the last failure (a slow read begun before an outage says nothing of it), so a
    probe between two attempts reports the outage rather than the end of the retry interval."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        self.down_until = 0.0
        self.down = False
        self.failures = 0
        self.lock = threading.Lock()

    def user_vector(self, generation: Generation, user_id: Any) -> tuple[np.ndarray | None, bool]:
        """The user's vector (None where no version holds the user) and whether it came from the fallback."""
        local = generation.users.get(user_id)
        fallback_vector = generation.user_vectors[local] if local is not None else None
        if generation.online is None or time.monotonic() < self.down_until:
            return fallback_vector, True
        failures_before = self.failures
        try:
            vectors, _ = generation.online.get("user", [user_id])
        except Exception as exc:
            with self.lock:
                if time.monotonic() >= self.down_until:
                    log.warning("online store read failed (%s): serving the local copy", exc)
                self.down_until = time.monotonic() + self.retry_after_s
                self.down = True
                self.failures += 1
            return fallback_vector, True
        if self.down:
            with self.lock:
                if self.down and self.failures == failures_before:
                    log.info("online store reachable again")
                    self.down = False
        vector = vectors[0]
        if vector is None and fallback_vector is not None:  # the online store lags the version: say so
            return fallback_vector, True
        return vector, False


class RankingService:
    """Ranks homepage modules for a user; holds the serving generation and swaps it on reload."""

    def __init__(self, config: ServeConfig, feedback=None, impressions=None, metrics=None) -> None:
        self.config = config
        self.generation = Generation(config)
        self.reader = OnlineReader(config.retry_online_after_s)
        self.feedback = feedback
        self.impressions = impressions
        self.metrics = metrics
        self.reload_lock = threading.Lock()

    def reload(self) -> Generation:
        """Load the newly published pair and swap it in; raises (and keeps the serving one) where it cannot."""
        with self.reload_lock:
            fresh = Generation(self.config)
            old, self.generation = self.generation, fresh
            log.info(
                "reloaded: %s -> %s",
                {a.name: a.model_version for a in old.arms.values()},
                {a.name: a.model_version for a in fresh.arms.values()},
            )
            return fresh

    def now(self) -> datetime:
        """The time of a request that does not give one (`serve.clock`)."""
        if self.config.clock == "data_end":
            return datetime.fromtimestamp((self.generation.state.data_end_us + 1) / US, tz=UTC)  # sees the newest event
        return datetime.now(UTC)

    def arm_of(self, generation: Generation, user_id: Any) -> Arm:
        """The user's arm: a stable hash of (salt, user id) into the experiment's shares."""
        experiment = self.config.experiment
        if not experiment.arms:
            return generation.arms["default"]
        digest = hashlib.sha256(f"{experiment.salt}:{user_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        total = 0.0
        for name in sorted(experiment.shares):
            total += experiment.shares[name]
            if point < total:
                return generation.arms[name]
        return generation.arms[sorted(experiment.shares)[-1]]

    # ------------------------------------------------------------------------------------------------ ranking

    def rank(
        self,
        user_id: Any,
        candidates: list | None = None,
        slots: int | None = None,
        device: str | None = None,
        timestamp: datetime | None = None,
        session_id: str | None = None,
        recent: RecentEvents | None = None,
        exclude: list | None = None,
        diversity: dict[str, Any] | None = None,
        reasons: bool = True,
        record: bool = True,
    ) -> Page:
        """The user's page: the top `slots` of `candidates` (default: every live module), best first."""
        started = time.perf_counter()
        generation = self.generation  # this request stays on it, whatever a reload does meanwhile
        arm = self.arm_of(generation, user_id)
        when = timestamp or self.now()
        t_us = int(when.timestamp() * US)
        page = Page(
            request_id=uuid.uuid4().hex,
            user_id=user_id,
            modules=[],
            model_version=arm.model_version,
            embedding_version=generation.embedding_version,
            arm=arm.name,
            fallback=None,
            timestamp=when,
            device=device,
            session_id=session_id,
        )
        slots = slots or self.config.slots
        state = generation.state
        try:
            actions = self._feedback_of(page, user_id)
            hidden = {c for c, a in actions.items() if a in ("hide", "hide_similar")}
            known, unknown = self._candidates(state, candidates, exclude, t_us, hidden)
            explain = reasons and self.config.reasons
            self._fill(
                page,
                generation,
                arm,
                known,
                unknown,
                slots,
                t_us,
                device,
                session_id,
                recent,
                diversity,
                actions,
                explain,
            )
        except Exception:
            log.exception("ranking failed for user %r: serving the popularity order", user_id)
            page.fallback = "degraded"
            known, unknown = self._candidates(state, candidates, exclude, t_us, set())
            page.modules = self._popularity_page(generation, known, unknown, slots, "degraded")
        page.timings["total_ms"] = (time.perf_counter() - started) * 1e3
        if self.impressions is not None and record:
            self.impressions.append(page)
        if self.metrics is not None and record:
            self.metrics.observe_page(page)
        return page

    def _feedback_of(self, page: Page, user_id) -> dict[str, str]:
        """The user's feedback (content id -> latest action); none, and the page flagged degraded, where the
        feedback database cannot be read."""
        if self.feedback is None:
            return {}
        try:
            return self.feedback.actions(user_id)
        except Exception as exc:
            log.warning("feedback of user %r unreadable (%s): ranking without it", user_id, exc)
            page.fallback = "degraded"
            return {}

    @staticmethod
    def _candidates(state: FeatureState, candidates, exclude, t_us: int, hidden: set) -> tuple[np.ndarray, list]:
        """Known candidate modules (state indices, request order, duplicates, exclusions and hidden ones removed)
        and the ids of unknown ones."""
        hidden = set(exclude or []) | hidden
        hidden_index = {state.module_of(c) for c in hidden} - {None}
        if candidates is None:
            order = [int(m) for m in state.active_modules(t_us) if int(m) not in hidden_index]
            return np.array(order, np.int64), []
        known, unknown, seen = [], [], set()
        for content_id in candidates:
            index = state.module_of(content_id)
            key = index if index is not None else ("unknown", str(content_id))
            if key in seen or content_id in hidden or index in hidden_index:
                continue
            seen.add(key)
            (unknown.append(content_id) if index is None else known.append(index))
        return np.array(known, np.int64), unknown

    def _fill(
        self,
        page,
        generation,
        arm,
        known,
        unknown,
        slots,
        t_us,
        device,
        session_id,
        recent,
        diversity,
        actions,
        explain,
    ):
        state = generation.state
        user_id = page.user_id
        timer = time.perf_counter()
        user_vector, from_fallback = (None, False)
        if arm.module_vectors is not None:
            user_vector = self._fresh_vector(generation, user_id, recent, t_us)
            if user_vector is None:
                user_vector, from_fallback = self.reader.user_vector(generation, state_id(state, user_id))
        page.timings["embeddings_ms"] = (time.perf_counter() - timer) * 1e3
        known_user = state.user_index.get(state_id(state, user_id)) is not None
        if not known_user and not recent and user_vector is None:
            page.fallback = "cold_start"
            page.modules = self._popularity_page(generation, known, unknown, slots, "cold_start")
            return
        if from_fallback:
            page.fallback = "degraded"
        if not len(known):
            page.modules = self._unknown_modules(unknown, 0)
            return
        timer = time.perf_counter()
        features = state.features(user_id, known, t_us, device, session_id, recent)
        page.timings["features_ms"] = (time.perf_counter() - timer) * 1e3
        timer = time.perf_counter()
        x0 = self.inputs(arm, features.dense, known, user_vector)
        with torch.no_grad():
            logits = arm.ranker.relevance(x0).numpy().astype(np.float64)
        page.timings["model_ms"] = (time.perf_counter() - timer) * 1e3
        adjusted = logits.copy()
        notes: dict[int, list[dict[str, Any]]] = {}
        if actions and arm.module_vectors is not None:
            adjusted = adjust_for_feedback(actions, known, adjusted, arm.module_vectors, notes, self.config, state)
        order = self._order(known, adjusted, slots, arm, diversity, state)
        top = order[:slots]
        propensity = np.ones(len(top))
        if self.config.exploration > 0:
            top, propensity = explore(adjusted, order, slots, self.config, page.request_id)
        reasons = self.reasons(arm, state, x0, logits, top, known, features) if explain else {}
        page.modules = [
            {
                "content_id": state.module_ids[int(known[row])],
                "score": float(1 / (1 + np.exp(-logits[row]))),
                "rank": rank + 1,
                "reasons": notes.get(int(row), []) + reasons.get(int(row), []),
                "propensity": float(propensity[rank]),
            }
            for rank, row in enumerate(top)
        ]
        if len(page.modules) < slots and unknown:
            page.modules += self._unknown_modules(unknown[: slots - len(page.modules)], len(page.modules))

    @staticmethod
    def _fresh_vector(generation: Generation, user_id, recent: RecentEvents | None, t_us: int) -> np.ndarray | None:
        """The user's embedding with the request's item events before `t_us` added to its graph edges (the GNN's
        inductive aggregation); None without such events or without the version's inductive state."""
        kit = generation.inductive
        if kit is None or not recent:
            return None
        items, kinds = [], []
        for item, kind, stamp in zip(recent.item_ids, recent.event_types, recent.timestamps, strict=True):
            if item is None or stamp >= t_us:
                continue
            row = generation.kit_items.get(coerce_id(item, generation.state.item_dtype))
            behaviour = generation.kit_behaviours.get(kind)
            if row is not None and behaviour is not None:
                items.append(row)
                kinds.append(behaviour)
        if not items:
            return None
        user = generation.users.get(coerce_id(user_id, generation.state.user_dtype))
        return kit.embed(user, np.array(items, np.int64), np.array(kinds, np.int64))

    def inputs(self, arm: Arm, dense: np.ndarray, known: np.ndarray, user_vector: np.ndarray | None) -> torch.Tensor:
        """[n, width] the ranker's input rows of a request: its features in the ranker's order, the flags and the
        embedding terms."""
        n = len(known)
        flags = np.zeros((n, 2), np.float32)
        user = module = None
        if arm.module_vectors is not None:
            flags[:, 0] = float(user_vector is not None)
            flags[:, 1] = arm.module_known[known]
            vector = user_vector if user_vector is not None else np.zeros(arm.module_vectors.shape[1], np.float32)
            user = torch.from_numpy(np.repeat(np.asarray(vector, np.float32)[None, :], n, axis=0))
            module = torch.from_numpy(arm.module_vectors[known])
        full = np.concatenate([dense, flags], axis=1)
        columns = np.where(arm.columns >= 0, arm.columns, dense.shape[1] + (-1 - arm.columns))
        return arm.ranker.inputs(torch.from_numpy(full[:, columns]), user, module)

    def _order(self, known, adjusted, slots, arm, diversity, state) -> np.ndarray:
        """Row indices best first; with `diversity`, MMR over module embeddings and per-type caps."""
        order = np.argsort(-adjusted, kind="stable")
        order = order[np.isfinite(adjusted[order])]  # rows feedback suppressed leave the page
        if not diversity:
            return order
        from serving.diversity import rerank

        return rerank(order, adjusted, known, arm.module_vectors, state, slots, diversity)

    def reasons(self, arm, state, x0, logits, top, known, features) -> dict[int, list[dict[str, Any]]]:
        """Per returned row, up to two reasons: the feature groups that added most to its score (occlusion: each
        group set to the training mean, i.e. 0 in the standardised input), put in words. Every (row, group) pair is
        occluded in one batch; a group's words are composed only when its gain would be named, best gain first."""
        if not len(top):
            return {}
        rows = np.asarray(top, np.int64)
        keep = arm.reason_keep  # [groups, width] 0 on each group's columns
        batch = (x0[torch.from_numpy(rows)].unsqueeze(1) * keep.unsqueeze(0)).reshape(-1, x0.shape[1])
        with torch.no_grad():
            occluded = arm.ranker.relevance(batch).numpy().reshape(len(rows), len(arm.reason_groups))
        gains = logits[rows][:, None] - occluded
        out: dict[int, list[dict[str, Any]]] = {}
        for j, row in enumerate(rows):
            said: list[dict[str, Any]] = []
            value = _RowValues(features.dense[row], state.column)
            for g in np.argsort(-gains[j], kind="stable"):  # ties: the groups' order
                gain = float(gains[j, g])
                if gain < MIN_CONTRIBUTION:
                    break
                group = arm.reason_groups[g]
                text = reason_text(group, value, int(known[row]), state, features)
                if text:
                    said.append({"code": group, "text": text, "weight": round(gain, 4)})
                    if len(said) == 2:
                        break
            out[int(row)] = said or [{"code": "overall", "text": "a good match overall", "weight": 0.0}]
        return out

    def _popularity_page(self, generation, known, unknown, slots, why: str) -> list[dict[str, Any]]:
        state = generation.state
        known = np.asarray(known, np.int64)
        scores = generation.popularity[known] if len(known) else np.zeros(0)
        order = np.argsort(-scores, kind="stable")[:slots]
        text = (
            "popular on the homepage"
            if why == "cold_start"
            else "popular on the homepage (personal ranking unavailable)"
        )
        modules = [
            {
                "content_id": state.module_ids[int(known[row])],
                "score": float(scores[row]),
                "rank": rank + 1,
                "reasons": [{"code": "popularity", "text": text, "weight": 0.0}],
                "propensity": 1.0,
            }
            for rank, row in enumerate(order)
        ]
        if len(modules) < slots and unknown:
            modules += self._unknown_modules(unknown[: slots - len(modules)], len(modules))
        return modules

    @staticmethod
    def _unknown_modules(unknown: list, offset: int) -> list[dict[str, Any]]:
        return [
            {
                "content_id": content_id,
                "score": 0.0,
                "rank": offset + i + 1,
                "reasons": [{"code": "unknown", "text": "not in the ranker's catalog yet: placed last", "weight": 0.0}],
                "propensity": 1.0,
            }
            for i, content_id in enumerate(unknown)
        ]


class _RowValues:
    """One feature row read by name (`get`), without building a dict of every feature."""

    def __init__(self, row: np.ndarray, column: dict[str, int]) -> None:
        self.row, self.column = row, column

    def get(self, name: str, default: float = 0.0) -> float:
        index = self.column.get(name)
        return default if index is None else float(self.row[index])

    def __getitem__(self, name: str) -> float:
        return float(self.row[self.column[name]])


def state_id(state: FeatureState, value: Any) -> Any:
    """A user id from a request in the index's type (a numeric id may arrive as a string, or the reverse)."""
    return coerce_id(value, state.user_dtype)


def reason_text(group: str, value, module: int, state: FeatureState, features) -> str | None:
    """A reason a merchandiser reads, from the row's feature values; None where the group has nothing to say."""
    if group == "category":
        name, count = state.top_category(module, features.category_events)
        if count:
            return f"you viewed {count} item{'s' if count != 1 else ''} in {name}"
    elif group == "featured" and value.get("user_featured_events", 0) > 0:
        count = int(value["user_featured_events"])
        return f"you looked at its items {count} time{'s' if count != 1 else ''}"
    elif group == "session" and value.get("session_featured_events", 0) + value.get("session_category_share", 0) > 0:
        return "like what you are browsing now"
    elif group == "brand" and value.get("user_brand_share", 0) > 0:
        brand = state.main_brand[module]
        if 0 <= brand < len(state.brand_names):
            return f"you often shop {state.brand_names[brand]}"
    elif group == "popularity":
        return "popular with shoppers"
    elif group == "fresh" and value.get("module_age_days", 99) < 7:
        return "new this week"
    elif group == "history" and value.get("user_module_clicks", 0) > 0:
        return "you clicked it before"
    elif group == "taste":
        return "popular with shoppers like you"
    elif group == "context":
        return "often clicked at this time of day"
    return None


def explore(adjusted: np.ndarray, order: np.ndarray, slots: int, config: ServeConfig, request_id: str):
    """Fill the slots one at a time: with probability 1 - exploration the best remaining module, otherwise one
    drawn from the softmax of the remaining logits / temperature; returns the rows and each pick's propensity, its
    probability given the picks above it (the impressions contract's meaning, as in the generated shop's log)."""
    rng = np.random.default_rng(int(request_id[:16], 16))
    remaining = list(order)
    picks, propensity = [], []
    share, temperature = config.exploration, config.temperature
    for _ in range(min(slots, len(remaining))):
        logits = adjusted[remaining] / temperature
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        best = int(np.argmax(adjusted[remaining]))
        choice = best if rng.random() >= share else int(rng.choice(len(remaining), p=weights))
        probability = share * weights[choice] + (1 - share) * (choice == best)
        picks.append(remaining.pop(choice))
        propensity.append(float(probability))
    return np.array(picks, np.int64), np.array(propensity)


class ReloadSignal:
    """Carries a reload to every worker of one server: the worker that took POST /admin/reload writes a new token
    to a shared file, and each worker's watcher thread, seeing the token change, reloads too (within `interval`
    seconds). Uvicorn's workers are separate processes, so the request itself reaches only one of them."""

    def __init__(self, path: str | Path, service: RankingService, metrics=None, interval: float = 1.0) -> None:
        self.path, self.service, self.metrics, self.interval = Path(path), service, metrics, interval
        self.seen = self._read()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="reload-signal", daemon=True)
        self.thread.start()

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except OSError:
            return None

    def announce(self) -> None:
        """Tell the other workers (this one has reloaded already)."""
        token = uuid.uuid4().hex
        self.seen = token
        temporary = self.path.with_name(f".{self.path.name}.{token}")
        temporary.write_text(token)
        temporary.replace(self.path)

    def _watch(self) -> None:
        while not self.stopping.wait(self.interval):
            token = self._read()
            if token is None or token == self.seen:
                continue
            self.seen = token
            try:
                generation = self.service.reload()
                if self.metrics is not None:
                    self.metrics.reloads.labels("ok").inc()
                    self.metrics.serving(generation)
            except Exception as exc:
                log.warning("reload signalled by another worker refused, the serving pair stays: %s", exc)
                if self.metrics is not None:
                    self.metrics.reloads.labels("refused").inc()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=self.interval + 1)
