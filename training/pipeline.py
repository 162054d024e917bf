"""The main scheduled job: input -> validated tables -> graph snapshot -> temporal split -> embeddings evaluated
against baselines -> the embedding model trained on all data -> its embeddings published to the feature store;
each stage atomic.

Run it with `graphrec run --config conf/default.yaml`. Every stage writes a complete artifact directory under
`workdir` or nothing, and `run_report.json` records what each stage did, with timings and row accounting.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from graphrec.artifacts import code_version, fingerprint_inputs, utc_now_iso, write_json_atomic
from graphrec.data.adapters import open_dataset
from graphrec.data.config import InputConfig, ShopConfig, ValidationConfig
from graphrec.data.shop import generate_shop, write_shop
from graphrec.data.validation import read_validated, validate_dataset
from graphrec.errors import InputError
from graphrec.graph.config import GraphConfig, SplitConfig
from graphrec.graph.snapshot import build_snapshot, default_cutoff, save_snapshot
from graphrec.graph.split import split_validated
from graphrec.store.publish import describe_drift
from training.config import EmbeddingStageConfig, ExportStageConfig
from training.evaluate import run_evaluation
from training.export import export_job
from training.train import train_job, warm_start_source

log = logging.getLogger("graphrec.pipeline")


class _Stages:
    """Numbered stage lines: one INFO line as each stage ends, with what it produced and how long it took."""

    def __init__(self, total: int) -> None:
        self.total, self.number, self.started = total, 0, time.perf_counter()

    def start(self) -> None:
        self.number += 1
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def done(self, name: str, message: str, *args: Any) -> None:
        log.info(f"[%d/%d] %s: {message} (%.1fs)", self.number, self.total, name, *args, self.seconds())


def run_pipeline(
    workdir: str | Path = "artifacts/default",
    input: InputConfig | None = None,
    shop: ShopConfig | None = None,
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
    shop = shop or ShopConfig()
    validation = validation or ValidationConfig()
    graph = graph or GraphConfig()
    split = split or SplitConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {"kind": "run_report", "started_at": utc_now_iso(), "stages": {}}
    modelled = split.enabled and embeddings.enabled
    total = 3 + (1 if split.enabled else 0) + (2 if modelled else 0) + (1 if modelled and export.enabled else 0)
    stages = _Stages(total)

    stages.start()
    tables, sources, notes, input_stats = open_input(input, shop, workdir / "raw")
    fingerprint = fingerprint_inputs(dict(sources))
    report["stages"]["input"] = {
        "format": input.format,
        "sources": fingerprint,
        "notes": notes,
        **input_stats,
        "seconds": stages.seconds(),
    }
    stages.done("input", "%s", _describe_input(input, input_stats, sources))

    stages.start()
    validated_dir = workdir / "validated"
    validation_report = validate_dataset(tables, validated_dir, validation, fingerprint)
    tables_report = {
        name: {k: r[k] for k in ("input_rows", "used", "deduplicated", "quarantined", "reasons")}
        for name, r in validation_report["tables"].items()
    }
    report["stages"]["validate"] = {
        "dir": str(validated_dir),
        "tables": tables_report,
        "cross_checks": validation_report["cross_checks"],
        "seconds": stages.seconds(),
    }
    stages.done(
        "validate",
        "%s rows used, %s deduplicated, %s quarantined",
        f"{sum(r['used'] for r in tables_report.values()):,}",
        f"{sum(r['deduplicated'] for r in tables_report.values()):,}",
        f"{sum(r['quarantined'] for r in tables_report.values()):,}",
    )

    stages.start()
    events, items, content, _ = read_validated(validated_dir)
    snapshot = build_snapshot(events, default_cutoff(events), items, content, graph, fingerprint)
    save_snapshot(snapshot, workdir / "snapshot")
    report["stages"]["snapshot"] = {
        "dir": str(workdir / "snapshot"),
        "cutoff": snapshot.manifest["cutoff"],
        "num_nodes": snapshot.manifest["num_nodes"],
        "num_edges": snapshot.manifest["num_edges"],
        "seconds": stages.seconds(),
    }
    stages.done(
        "snapshot",
        "%s nodes, %s edges before %s",
        f"{sum(snapshot.manifest['num_nodes'].values()):,}",
        f"{sum(snapshot.manifest['num_edges'].values()):,}",
        snapshot.manifest["cutoff"],
    )

    if split.enabled:
        stages.start()
        summary = split_validated(validated_dir, workdir / "split", split, graph, fingerprint=fingerprint)
        report["stages"]["split"] = {"dir": str(workdir / "split"), **summary, "seconds": stages.seconds()}
        target = summary["targets"].get(f"test/{embeddings.target_event}_{embeddings.target_node}", {})
        stages.done(
            "split",
            "validation from %s, test from %s; %s test targets",
            summary["split"]["train_end"][:10],
            summary["split"]["val_end"][:10],
            f"{target.get('pairs', 0):,}",
        )

    if split.enabled and embeddings.enabled:
        stages.start()
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
        ndcg = {name: round(r["ndcg@20"], 4) for name, r in evaluation["results"].items() if "ndcg@20" in r}
        report["stages"]["evaluate"] = {
            "dir": str(workdir / "evaluation"),
            "ndcg@20": ndcg,
            "seconds": stages.seconds(),
        }
        stages.done("evaluate", "test NDCG@20 %s", ", ".join(f"{name} {value:.4f}" for name, value in ndcg.items()))

        stages.start()
        # The epoch count chosen on the validation window (and confirmed on the test window) is reused on all data.
        epochs = ours.get("epochs", embeddings.train.epochs)
        previous = warm_start_source(workdir / "model", embeddings) if embeddings.warm_start else None
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
            "seconds": stages.seconds(),
        }
        warm = metadata["warm_start"] if metadata else None
        stages.done(
            "model",
            "%d epochs on every event, %s",
            epochs,
            f"warm-started from {warm['from']}" if warm else "from scratch",
        )
        if export.enabled and metadata is not None:
            stages.start()
            metrics = {"evaluation": {k: v for k, v in ours.items() if "@" in k or k == "epochs"}}
            manifest = export_job(workdir / "model", export.store, None, export.versions, export.feature_store, metrics)
            drift = manifest["drift"]
            report["stages"]["export"] = {
                "store": export.store,
                "version": manifest["version"],
                "space": manifest["space"],
                "rows": manifest["rows"],
                "drift": {k: drift.get(k) for k in ("previous_version", "mean_cosine", "compatible")},
                "online_store": export.feature_store.online_store if export.feature_store.enabled else None,
                "seconds": stages.seconds(),
            }
            stages.done(
                "export",
                "version %s live in %s (%s; online: %s)",
                manifest["version"],
                export.store,
                describe_drift(manifest),
                export.feature_store.online_store if export.feature_store.enabled else "disabled",
            )

    report["config"] = {
        "workdir": str(workdir),
        "input": asdict(input),
        "shop": asdict(shop),
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


def open_input(
    input: InputConfig, shop: ShopConfig, raw_dir: Path
) -> tuple[dict[str, Any], dict[str, Path], dict[str, Any], dict[str, Any]]:
    """The input tables of a run: the generated shop (written to `raw_dir`) or the files `input` names.

    Returns the tables, their source paths, the adapter's notes and, for a generated shop, its statistics.
    """
    if input.format == "generated":
        generated = generate_shop(shop)
        source_dir = write_shop(generated, raw_dir)
        tables, sources, notes = open_dataset("contract", source_dir)
        return tables, sources, notes, {"generated": generated.stats}
    if not input.path:
        raise InputError(f"input.path is required for input.format={input.format!r}")
    tables, sources, notes = open_dataset(input.format, input.path)
    return tables, sources, notes, {}


def _describe_input(input: InputConfig, stats: dict[str, Any], sources: dict[str, Path]) -> str:
    if "generated" in stats:
        shop = stats["generated"]
        return f"generated shop: {shop['events']:,} events, {shop['impressions']:,} impressions"
    return f"{input.format} from {input.path}: {', '.join(sorted(sources))}"
