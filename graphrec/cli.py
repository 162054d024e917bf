"""The `graphrec` console command: one subcommand per job, each a thin wrapper over a library function.

Options come from typed signatures and YAML (`--config conf/default.yaml`) through jsonargparse; any option can
be overridden on the command line (`--input.shop.seed 3`). Input errors print one clear line, no traceback.
"""

from __future__ import annotations

import logging
import sys
import warnings
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

import polars as pl

from graphrec.adapters import InputConfig, open_dataset
from graphrec.artifacts import fingerprint_inputs
from graphrec.embedding_store import ExportConfig
from graphrec.errors import GraphrecError
from graphrec.feature_store import FeatureStoreConfig
from graphrec.generate import ShopConfig, generate_shop, write_shop
from graphrec.graph import GraphConfig, build_snapshot, save_snapshot
from graphrec.models import ModelConfig
from graphrec.split import SplitConfig, split_by_days, write_split
from graphrec.validation import ValidationConfig, read_validated, validate_dataset
from training.evaluate import EvalConfig
from training.pipeline import EmbeddingStageConfig, ExportStageConfig, run_pipeline
from training.system import TrainConfig

log = logging.getLogger("graphrec")


def generate(out: str = "artifacts/shop", shop: ShopConfig | None = None, events: int | None = None) -> None:
    """Generate a shop (events, catalog, content modules, impressions and click ground truth) as Parquet.

    Args:
        out: output directory.
        shop: the shop's configuration (sizes, behaviour, seed).
        events: target event count; picks users, items and modules for it, overriding the sizes in `shop`.
    """
    config = shop or ShopConfig()
    if events is not None:
        config = ShopConfig.scaled_to(events, **{k: v for k, v in asdict(config).items() if k not in _SIZE_FIELDS})
    generated = generate_shop(config)
    write_shop(generated, out)
    log.info(
        "wrote %s events, %s impressions to %s",
        f"{generated.stats['events']:,}",
        f"{generated.stats['impressions']:,}",
        out,
    )


_SIZE_FIELDS = {"target_events", "n_users", "n_items", "n_content", "n_categories", "n_brands"}


def validate(
    input: str,
    out: str = "artifacts/validated",
    format: str = "contract",
    validation: ValidationConfig | None = None,
) -> None:
    """Validate input tables into typed Parquet, a quarantine of bad rows and a reconciled report.

    Args:
        input: a directory of contract tables (events, items, content, impressions as .parquet/.csv) or the
            file / directory an adapter reads.
        out: output directory for the validated dataset.
        format: `contract`, or an adapter: taobao-userbehavior, ecomm, taobao-mb, gowalla, mind.
        validation: validation settings (event aliases, timestamp handling, bad-row threshold).
    """
    tables, sources, _ = open_dataset(format, input)
    validate_dataset(tables, out, validation, fingerprint_inputs(dict(sources)))


def build_graph(
    input: str, out: str = "artifacts/snapshot", cutoff: str | None = None, graph: GraphConfig | None = None
) -> None:
    """Build a graph snapshot from a validated dataset, with only events strictly before the cutoff.

    Args:
        input: a validated dataset directory (from `graphrec validate`).
        out: output directory of the snapshot.
        cutoff: ISO-8601 time (UTC when no offset is given); defaults to one second after the last event.
        graph: snapshot settings (decay half-life, catalog nodes, component statistics).
    """
    events, items, content, paths = read_validated(input)
    when = cutoff or (events.select(pl.col("timestamp").max()).collect().item() + timedelta(seconds=1))
    snapshot = build_snapshot(events, when, items, content, graph, fingerprint_inputs(paths))
    save_snapshot(snapshot, out)
    log.info("snapshot at %s: %s -> %s", snapshot.manifest["cutoff"], snapshot.manifest["num_edges"], out)


def split(
    input: str, out: str = "artifacts/split", val_days: int = 7, test_days: int = 7, graph: GraphConfig | None = None
) -> None:
    """Write validation and test snapshots and their evaluation targets from a validated dataset.

    Args:
        input: a validated dataset directory.
        out: output directory.
        val_days: whole days in the validation window.
        test_days: whole days in the test window (the last days of the log).
        graph: snapshot settings.
    """
    events, items, content, paths = read_validated(input)
    windows = split_by_days(events, val_days, test_days)
    write_split(events, windows, out, items, content, graph, fingerprint=fingerprint_inputs(paths))


def run(
    workdir: str = "artifacts/default",
    input: InputConfig | None = None,
    validation: ValidationConfig | None = None,
    graph: GraphConfig | None = None,
    split: SplitConfig | None = None,
    embeddings: EmbeddingStageConfig | None = None,
    export: ExportStageConfig | None = None,
) -> None:
    """Run the main job end to end: input -> validate -> graph snapshot -> temporal split -> embeddings ->
    feature store.

    Args:
        workdir: directory for every artifact of the run and its run_report.json.
        input: where events come from (the generated shop by default).
        validation: validation settings.
        graph: snapshot settings.
        split: temporal split settings.
        embeddings: the embedding stages (evaluation against baselines, final model).
        export: publishing the final model's embeddings to the versioned store and Feast.
    """
    run_pipeline(workdir, input, validation, graph, split, embeddings, export)


def evaluate(
    input: str,
    out: str = "artifacts/evaluation",
    format: str = "contract",
    target_event: str = "purchase",
    target_node: str = "item",
    split: SplitConfig | None = None,
    validation: ValidationConfig | None = None,
    graph: GraphConfig | None = None,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    evaluation: EvalConfig | None = None,
) -> None:
    """Evaluate graphrec's embeddings against baselines on any events input, split by time.

    Args:
        input: events file or contract directory (or an adapter's input with --format), or a split directory
            written by `graphrec split` / `graphrec run` (it has split.json).
        out: output directory: metrics.json, metrics.md, curves.png (and validated/, split/ for raw input).
        format: input format (contract or an adapter name).
        target_event: the behaviour to predict (purchase for items, click for content).
        target_node: item or content.
        split: validation and test window sizes in days.
        validation: validation settings.
        graph: snapshot settings.
        model: the embedding model's hyperparameters.
        train: optimisation settings.
        evaluation: methods, ablations, cut-offs and slices.
    """
    from training.evaluate import evaluate_events, run_evaluation

    if (Path(input) / "split.json").exists():
        report = run_evaluation(input, out, target_event, target_node, model, train, evaluation)
    else:
        report = evaluate_events(
            input, out, format, target_event, target_node, split, validation, graph, model, train, evaluation
        )
    log.info("wrote %s/metrics.md (%d methods, %.0fs)", out, len(report["results"]), report["seconds"])


def train(
    snapshot: str,
    out: str = "artifacts/model",
    validation: str | None = None,
    target_event: str = "purchase",
    target_node: str = "item",
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    warm_start: str | None = None,
) -> None:
    """Train embeddings on a graph snapshot and save the model artifact.

    Args:
        snapshot: a snapshot directory (from build-graph, split or run).
        out: output directory of the model artifact.
        validation: a split window directory (e.g. .../split/val) to early-stop on its targets.
        target_event: the behaviour to predict.
        target_node: item or content.
        model: the model's hyperparameters.
        train: optimisation settings (epochs, batch size, strategy, devices, ...).
        warm_start: a previous model artifact: known users and items start from its embeddings, which keeps the
            new embeddings in the previous version's space.
    """
    from training.train import train_job

    train_job(snapshot, out, validation, target_event, target_node, model, train, warm_start)


def export_publish(
    model: str = "artifacts/default/model",
    store: str = "artifacts/store",
    snapshot: str | None = None,
    export: ExportConfig | None = None,
    feature_store: FeatureStoreConfig | None = None,
) -> None:
    """Publish a trained model's user, item and content embeddings as the store's new live version.

    Args:
        model: a model artifact directory (from `graphrec train` or `graphrec run`).
        store: the embedding store directory (versions, LATEST, the Feast repo).
        snapshot: the snapshot to embed on; defaults to the one the model was trained on.
        export: versioning settings (versions kept, alignment, compatibility threshold).
        feature_store: the Feast online store (sqlite or redis) and the online vector type.
    """
    from training.export import export_job

    export_job(model, store, snapshot, export, feature_store)


def export_rollback(
    store: str = "artifacts/store", to: str | None = None, feature_store: FeatureStoreConfig | None = None
):
    """Make an older kept version live again (verified first; the online store is rewritten with it).

    Args:
        store: the embedding store directory.
        to: the version to restore (e.g. v000003); defaults to the one before LATEST.
        feature_store: the Feast online store settings used when exporting.
    """
    from training.export import rollback_job

    rollback_job(store, to, feature_store)


def export_sync(store: str = "artifacts/store", feature_store: FeatureStoreConfig | None = None) -> None:
    """Write the LATEST version to the online store again (after an outage, or to fill a new Redis).

    Args:
        store: the embedding store directory.
        feature_store: the Feast online store settings.
    """
    from training.export import sync_job

    sync_job(store, feature_store)


def export_list(store: str = "artifacts/store") -> None:
    """Print the store's versions as JSON: created, cutoff, rows, space, stability, and which one is LATEST.

    Args:
        store: the embedding store directory.
    """
    import json

    from training.export import store_summary

    print(json.dumps(store_summary(store), indent=2))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `graphrec` command."""
    from jsonargparse import auto_cli

    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    commands = {
        "generate": generate,
        "validate": validate,
        "build-graph": build_graph,
        "split": split,
        "run": run,
        "evaluate": evaluate,
        "train": train,
        "export": {"publish": export_publish, "rollback": export_rollback, "sync": export_sync, "list": export_list},
    }
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["export"] and (len(args) == 1 or args[1].startswith("-")) and not {"-h", "--help"} & set(args):
        args.insert(1, "publish")  # `graphrec export --model ...` publishes
    try:
        auto_cli(commands, args=args, as_positional=False)
    except GraphrecError as exc:
        print(f"graphrec: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
