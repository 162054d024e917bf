"""The main scheduled job: input -> validated tables -> graph snapshot -> temporal split -> embeddings evaluated
against baselines -> the embedding model trained on all data -> its embeddings published to the feature store;
each stage atomic.

Run it with `graphrec run --config conf/default.yaml`. Every stage writes a complete artifact directory under
`workdir` or nothing, and `run_report.json` records what each stage did, with timings and row accounting.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from graphrec.adapters import InputConfig, open_dataset
from graphrec.artifacts import code_version, fingerprint_inputs, utc_now_iso, write_json_atomic
from graphrec.embedding_store import ExportConfig
from graphrec.feature_store import FeatureStoreConfig
from graphrec.generate import generate_shop, write_shop
from graphrec.graph import GraphConfig, build_snapshot, save_snapshot
from graphrec.models import ModelConfig
from graphrec.split import SplitConfig, split_by_days, write_split
from graphrec.validation import ValidationConfig, read_validated, validate_dataset
from training.evaluate import EvalConfig, run_evaluation
from training.export import export_job
from training.system import TrainConfig
from training.train import train_job

log = logging.getLogger("graphrec.pipeline")


@dataclass
class EmbeddingStageConfig:
    """The embedding stages of the job: evaluate against baselines on the split, then train on all data.

    Args:
        enabled: run the stages (needs the split).
        target_event: behaviour to predict.
        target_node: item or content.
        model: model hyperparameters.
        train: optimisation settings; the epoch count for the final model comes from the evaluation.
        evaluation: methods and slices of the evaluation.
        warm_start: start the final model from the previous run's model (`workdir/model`) where there is one,
            so successive embedding versions stay in one space (see the export's drift report).
    """

    enabled: bool = True
    target_event: str = "purchase"
    target_node: str = "item"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalConfig = field(default_factory=lambda: EvalConfig(ablations=False))
    warm_start: bool = True


@dataclass
class ExportStageConfig:
    """Publishing the final model's embeddings (see `graphrec export`).

    Args:
        enabled: run the stage (needs the model stage).
        store: the embedding store directory; it outlives runs (versions accumulate there).
        versions: versioning settings (versions kept, alignment, compatibility threshold).
        feature_store: the Feast online store (SQLite by default, Redis by connection string).
    """

    enabled: bool = True
    store: str = "artifacts/store"
    versions: ExportConfig = field(default_factory=ExportConfig)
    feature_store: FeatureStoreConfig = field(default_factory=FeatureStoreConfig)


def _warm_start_source(model_dir: Path, embeddings: EmbeddingStageConfig) -> Path | None:
    """The previous run's model if a warm start from it is possible (same target and dimension, ids recorded)."""
    if not (model_dir / "model.json").exists():
        return None
    metadata = json.loads((model_dir / "model.json").read_text())
    hyperparameters = metadata.get("hyperparameters", {})
    reasons = []
    if not (model_dir / "ids").is_dir():
        reasons.append("it records no ids")
    if hyperparameters.get("config", {}).get("dim") != embeddings.model.dim:
        reasons.append("its dimension differs")
    if metadata.get("target") != {"event": embeddings.target_event, "node": embeddings.target_node}:
        reasons.append("its target differs")
    if reasons:
        log.info("not warm-starting from %s: %s", model_dir, "; ".join(reasons))
        return None
    return model_dir


def _stage(number: int, total: int, name: str):
    log.info("[%d/%d] %s", number, total, name)
    return time.perf_counter()


def run_pipeline(
    workdir: str | Path = "artifacts/default",
    input: InputConfig | None = None,
    validation: ValidationConfig | None = None,
    graph: GraphConfig | None = None,
    split: SplitConfig | None = None,
    embeddings: EmbeddingStageConfig | None = None,
    export: ExportStageConfig | None = None,
) -> dict[str, Any]:
    """Run the job end to end into `workdir` and return its report (also written to `run_report.json`)."""
    embeddings = embeddings or EmbeddingStageConfig()
    export = export or ExportStageConfig()
    input = input or InputConfig()
    validation = validation or ValidationConfig()
    graph = graph or GraphConfig()
    split = split or SplitConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {"kind": "run_report", "started_at": utc_now_iso(), "stages": {}}
    modelled = split.enabled and embeddings.enabled
    total = 3 + (1 if split.enabled else 0) + (2 if modelled else 0) + (1 if modelled and export.enabled else 0)

    t = _stage(1, total, "input")
    if input.format == "generated":
        shop = generate_shop(input.shop)
        source_dir = write_shop(shop, workdir / "raw")
        tables, sources, notes = open_dataset("contract", source_dir)
        log.info(
            "generated %s events, %s impressions into %s",
            f"{shop.stats['events']:,}",
            f"{shop.stats['impressions']:,}",
            source_dir,
        )
    else:
        if not input.path:
            raise ValueError(f"input.path is required for input.format={input.format!r}")
        tables, sources, notes = open_dataset(input.format, input.path)
    fingerprint = fingerprint_inputs({name: path for name, path in sources.items()})
    report["stages"]["input"] = {
        "format": input.format,
        "sources": fingerprint,
        "notes": notes,
        "seconds": round(time.perf_counter() - t, 2),
    }

    t = _stage(2, total, "validate")
    validated_dir = workdir / "validated"
    validation_report = validate_dataset(tables, validated_dir, validation, fingerprint)
    report["stages"]["validate"] = {
        "dir": str(validated_dir),
        "tables": {
            name: {k: r[k] for k in ("input_rows", "used", "deduplicated", "quarantined", "reasons")}
            for name, r in validation_report["tables"].items()
        },
        "cross_checks": validation_report["cross_checks"],
        "seconds": round(time.perf_counter() - t, 2),
    }

    t = _stage(3, total, "graph snapshot")
    events, items, content, _ = read_validated(validated_dir)
    last = events.select(pl.col("timestamp").max()).collect().item()
    cutoff = last + timedelta(seconds=1)  # strictly-before semantics: the full snapshot includes the last event
    snapshot = build_snapshot(events, cutoff, items, content, graph, fingerprint)
    save_snapshot(snapshot, workdir / "snapshot")
    report["stages"]["snapshot"] = {
        "dir": str(workdir / "snapshot"),
        "cutoff": snapshot.manifest["cutoff"],
        "num_nodes": snapshot.manifest["num_nodes"],
        "num_edges": snapshot.manifest["num_edges"],
        "seconds": round(time.perf_counter() - t, 2),
    }
    log.info(
        "snapshot: %s nodes, %s edges",
        f"{sum(snapshot.manifest['num_nodes'].values()):,}",
        f"{sum(snapshot.manifest['num_edges'].values()):,}",
    )

    if split.enabled:
        t = _stage(4, total, "temporal split")
        windows = split_by_days(events, split.val_days, split.test_days)
        summary = write_split(events, windows, workdir / "split", items, content, graph, fingerprint=fingerprint)
        report["stages"]["split"] = {
            "dir": str(workdir / "split"),
            **summary,
            "seconds": round(time.perf_counter() - t, 2),
        }

    if split.enabled and embeddings.enabled:
        t = _stage(5, total, "evaluate embeddings against baselines")
        evaluation = run_evaluation(
            workdir / "split",
            workdir / "evaluation",
            embeddings.target_event,
            embeddings.target_node,
            embeddings.model,
            embeddings.train,
            embeddings.evaluation,
        )
        ours = evaluation["results"].get("graphrec", {})
        report["stages"]["evaluate"] = {
            "dir": str(workdir / "evaluation"),
            "ndcg@20": {name: round(r["ndcg@20"], 4) for name, r in evaluation["results"].items()},
            "seconds": round(time.perf_counter() - t, 2),
        }
        t = _stage(6, total, "train the embedding model on the full snapshot")
        # The epoch count chosen on the validation window (and confirmed on the test window) is reused on all data.
        epochs = ours.get("epochs", embeddings.train.epochs)
        previous = _warm_start_source(workdir / "model", embeddings) if embeddings.warm_start else None
        metadata = train_job(
            workdir / "snapshot",
            workdir / "model",
            None,
            embeddings.target_event,
            embeddings.target_node,
            embeddings.model,
            replace(embeddings.train, epochs=epochs),
            previous,
        )
        report["stages"]["model"] = {
            "dir": str(workdir / "model"),
            "epochs": epochs,
            "behaviour_weights": metadata["behaviour_weights"] if metadata else None,
            "warm_start": metadata["warm_start"] if metadata else None,
            "seconds": round(time.perf_counter() - t, 2),
        }
        if export.enabled and metadata is not None:
            t = _stage(7, total, "publish embeddings to the feature store")
            metrics = {"evaluation": {k: v for k, v in ours.items() if "@" in k or k == "epochs"}}
            manifest = export_job(workdir / "model", export.store, None, export.versions, export.feature_store, metrics)
            report["stages"]["export"] = {
                "store": export.store,
                "version": manifest["version"],
                "space": manifest["space"],
                "rows": manifest["rows"],
                "drift": {k: manifest["drift"].get(k) for k in ("previous_version", "mean_cosine", "compatible")},
                "online_store": export.feature_store.online_store if export.feature_store.enabled else None,
                "seconds": round(time.perf_counter() - t, 2),
            }

    report["config"] = {
        "input": asdict(input),
        "validation": asdict(validation),
        "graph": asdict(graph),
        "split": asdict(split),
        "embeddings": asdict(embeddings),
        "export": asdict(export),
    }
    report["code_version"] = code_version()
    report["seconds"] = round(time.perf_counter() - started, 2)
    report["finished_at"] = utc_now_iso()
    write_json_atomic(workdir / "run_report.json", report)
    log.info("done in %.1fs; report: %s", report["seconds"], workdir / "run_report.json")
    return report
