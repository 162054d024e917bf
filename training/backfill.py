"""The backfill job: embedding versions at past cutoffs, so every logged impression meets embeddings that never saw it.

`graphrec backfill --validated artifacts/default/validated --every_days 7` builds a snapshot strictly before each
cutoff, trains the embeddings on it (each cutoff warm-started from the one before, so the versions stay in one
space) and publishes the model as a version of the store whose cutoff is the snapshot's. The feature store's
point-in-time retrieval then joins each impression to the newest version with cutoff <= its time: a version
learned only from events before the impression. A cutoff whose version the store already holds is skipped, so a
killed backfill continues where it stopped and a rerun changes nothing.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from graphrec.artifacts import write_json_atomic
from graphrec.data.validation import read_feedback, read_validated, text_encoder_of
from graphrec.errors import ConfigError, InputError
from graphrec.graph.config import GraphConfig
from graphrec.graph.snapshot import build_snapshot, save_snapshot
from graphrec.store.versions import list_versions, orphan_versions, read_manifest
from training.config import BackfillConfig, EmbeddingStageConfig, ExportStageConfig
from training.export import export_job
from training.train import train_job, warm_start_source

log = logging.getLogger("graphrec.backfill")


def backfill_cutoffs(events: pl.LazyFrame, config: BackfillConfig) -> list[datetime]:
    """The cutoffs of `config` over the events' period: midnights (UTC) from the first event's day plus
    `first_after_days`, every `every_days`, up to the last event."""
    if config.cutoffs:
        try:
            parsed = [datetime.fromisoformat(c) for c in config.cutoffs]
        except ValueError as exc:
            raise ConfigError(f"backfill.cutoffs: expected ISO times such as 2026-01-12, got {exc}") from None
        return sorted(c.replace(tzinfo=UTC) if c.tzinfo is None else c.astimezone(UTC) for c in parsed)
    first, last = (
        events.select(pl.col("timestamp").min().alias("first"), pl.col("timestamp").max().alias("last"))
        .collect()
        .row(0)
    )
    if first is None:
        raise InputError("events: no rows, so there is nothing to backfill")
    day = datetime(first.year, first.month, first.day, tzinfo=UTC) + timedelta(days=config.first_after_days)
    cutoffs = []
    while day <= last:
        cutoffs.append(day)
        day += timedelta(days=config.every_days)
    return cutoffs


def published_cutoffs(store: str | Path, workdir: str | Path) -> set[str]:
    """Cutoffs (ISO strings) already published: the store's versions, and those this backfill recorded (retention
    may have deleted their files while Feast's offline history keeps them)."""
    store, state = Path(store), Path(workdir) / "backfill.json"
    done = set(json.loads(state.read_text())["published"]) if state.exists() else set()
    if (store / "embeddings").exists():
        orphans = set(orphan_versions(store))  # a killed export's version was never live: publish it again
        done |= {read_manifest(store, v)["cutoff"] for v in list_versions(store) if v not in orphans}
    return done


def backfill_job(
    validated: str | Path,
    workdir: str | Path = "artifacts/backfill",
    backfill: BackfillConfig | None = None,
    graph: GraphConfig | None = None,
    embeddings: EmbeddingStageConfig | None = None,
    export: ExportStageConfig | None = None,
) -> list[dict[str, Any]]:
    """Publish an embedding version at every backfill cutoff the store lacks; returns one summary per cutoff."""
    backfill = backfill or BackfillConfig()
    graph = graph or GraphConfig()
    embeddings = embeddings or EmbeddingStageConfig()
    export = export or ExportStageConfig()
    workdir = Path(workdir)
    events, items, content, _ = read_validated(validated)
    feedback = read_feedback(validated)
    text_encoder = text_encoder_of(validated)
    cutoffs = backfill_cutoffs(events, backfill)
    if not cutoffs:
        raise InputError(f"{validated}: the events span less than backfill.first_after_days; no cutoff to backfill")
    done = published_cutoffs(export.store, workdir)
    model_dir = workdir / "model"
    train = replace(embeddings.train, epochs=backfill.epochs) if backfill.epochs else embeddings.train
    summaries = []
    for number, cutoff in enumerate(cutoffs, 1):
        if cutoff.isoformat() in done:
            log.info("[%d/%d] cutoff %s: already in %s, skipped", number, len(cutoffs), cutoff, export.store)
            summaries.append({"cutoff": cutoff.isoformat(), "skipped": True})
            continue
        started = time.perf_counter()
        snapshot = build_snapshot(events, cutoff, items, content, graph, text_encoder=text_encoder, feedback=feedback)
        snapshot_dir = workdir / "snapshot"
        save_snapshot(snapshot, snapshot_dir)
        previous = warm_start_source(model_dir, embeddings) if embeddings.warm_start else None
        metadata = train_job(
            snapshot_dir,
            model_dir,
            None,
            embeddings.target_event,
            embeddings.target_node,
            embeddings.model,
            train,
            previous,
        )
        if metadata is None:  # a DDP rank other than 0: rank 0 publishes
            continue
        manifest = export_job(model_dir, export.store, snapshot_dir, export.versions, export.feature_store)
        seconds = time.perf_counter() - started
        log.info(
            "[%d/%d] cutoff %s: version %s (%s users, %s items) in %.0fs",
            number,
            len(cutoffs),
            cutoff,
            manifest["version"],
            f"{manifest['rows'].get('user', 0):,}",
            f"{manifest['rows'].get('item', 0):,}",
            seconds,
        )
        summaries.append({"cutoff": cutoff.isoformat(), "version": manifest["version"], "seconds": round(seconds, 1)})
        done.add(cutoff.isoformat())
        write_json_atomic(workdir / "backfill.json", {"store": str(export.store), "published": sorted(done)})
    shutil.rmtree(workdir / "snapshot", ignore_errors=True)
    return summaries
