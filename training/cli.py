"""The `graphrec` console command: one subcommand per job, each a thin wrapper over a library function or job.

Options come from typed signatures and YAML (`--config conf/<command>.yaml`) through jsonargparse. A setting has
one name in every command (`--embeddings.model.dim` in `run`, `train` and `evaluate`; `--export.store` in `run`
and every `export` command), and `graphrec <command> --print_config` writes a YAML that `--config` reads back.
Only light config modules are imported here: each command imports its stage when it runs, so `--help` is fast.
Input errors print one clear line, no traceback, and exit 2; `run` also exits 3 when the quality gate refuses
its pair and 75 when another run holds its workdir or store.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import fields
from pathlib import Path

from graphrec.data.config import InputConfig, ShopConfig, ValidationConfig
from graphrec.errors import ConfigError, GraphrecError
from graphrec.graph.config import GraphConfig, SplitConfig
from serving.config import ServeConfig
from training.config import (
    BackfillConfig,
    EmbeddingStageConfig,
    ExportStageConfig,
    GateConfig,
    RankerStageConfig,
    ReloadConfig,
    TuneConfig,
)
from training.logs import LOG_FORMATS, setup_logging
from training.run_state import EXIT_BUSY, EXIT_GATED
from training.signals import stop_on_sigterm

log = logging.getLogger("graphrec")

EXIT_OK = 0
EXIT_INPUT_ERROR = 2
_EXIT_WORDS = {EXIT_GATED: "gated", EXIT_BUSY: "busy"}

_LOGGING: list = ["text", False]  # the global --log-format and --verbose, for commands that configure processes
_SIZE_FIELDS = {"target_events", "n_users", "n_items", "n_content", "n_categories", "n_brands"}


def generate(out: str = "artifacts/shop", shop: ShopConfig = ShopConfig(), events: int | None = None) -> None:  # noqa: B008
    """Generate a shop (events, catalog, content modules, impressions and click truth) as Parquet.

    Args:
        out: output directory.
        shop: the generated shop (sizes, behaviour, seed); the same group as in `graphrec run`.
        events: target event count; picks users, items and modules for it, overriding the sizes in `shop`.
    """
    from graphrec.data.shop import generate_shop, write_shop

    config = shop
    if events is not None and events < 1:
        raise ConfigError(f"--events must be a positive integer, not {events}")
    if events is not None:
        config = ShopConfig.scaled_to(
            events, **{f.name: getattr(shop, f.name) for f in fields(shop) if f.name not in _SIZE_FIELDS}
        )
    generated = generate_shop(config)
    write_shop(generated, out)
    log.info(
        "wrote %s events, %s impressions to %s",
        f"{generated.stats['events']:,}",
        f"{generated.stats['impressions']:,}",
        out,
    )


def validate(
    input: InputConfig = InputConfig(format="contract"),  # noqa: B008
    out: str = "artifacts/validated",
    validation: ValidationConfig = ValidationConfig(),  # noqa: B008
) -> None:
    """Validate input tables into typed Parquet, a quarantine of bad rows and a reconciled report.

    Args:
        input: the tables to read: `--input.path` (a directory of contract tables, or the file or directory an
            adapter reads) and `--input.format` (contract, or an adapter: taobao-userbehavior, ecomm, taobao-mb,
            gowalla, mind); `--input.feedback`: the ranking API's feedback directory or a feedback table.
        out: output directory for the validated dataset.
        validation: validation settings (event aliases, timestamp handling, bad-row threshold).
    """
    from graphrec.artifacts import fingerprint_inputs
    from graphrec.data.adapters import open_dataset
    from graphrec.data.validation import validate_dataset

    tables, sources, _ = open_dataset(*_input_source(input))
    if input.feedback:
        from graphrec.data.feedback import read_feedback_store

        if "feedback" in tables:
            raise GraphrecError(f"--input.feedback: {sources['feedback']} is already the input's feedback table")
        path = Path(input.feedback)
        if not path.exists():
            raise GraphrecError(f"--input.feedback {path}: no such directory or file")
        tables["feedback"] = read_feedback_store(path) if path.is_dir() else path
        sources["feedback"] = path
    report = validate_dataset(tables, out, validation, fingerprint_inputs(dict(sources)))
    for name, table in report["tables"].items():
        log.info(
            "%s: %s rows used, %s deduplicated, %s quarantined",
            name,
            f"{table['used']:,}",
            f"{table['deduplicated']:,}",
            f"{table['quarantined']:,}",
        )
    log.info("validated dataset: %s", out)


def build_graph(
    validated: str,
    out: str = "artifacts/snapshot",
    cutoff: str | None = None,
    graph: GraphConfig = GraphConfig(),  # noqa: B008
) -> None:
    """Build a graph snapshot from a validated dataset, with only events strictly before the cutoff.

    Args:
        validated: a validated dataset directory (from `graphrec validate`).
        out: output directory of the snapshot.
        cutoff: ISO-8601 time (UTC when no offset is given); defaults to one second after the last event.
        graph: snapshot settings (decay half-life, catalog nodes, component statistics).
    """
    from graphrec.artifacts import fingerprint_inputs
    from graphrec.data.validation import read_feedback, read_validated, text_encoder_of
    from graphrec.graph.snapshot import build_snapshot, default_cutoff, save_snapshot

    events, items, content, paths = read_validated(validated)
    cutoff = cutoff or default_cutoff(events)
    fingerprint = fingerprint_inputs(paths)
    text = text_encoder_of(validated)
    snapshot = build_snapshot(events, cutoff, items, content, graph, fingerprint, text, read_feedback(validated))
    save_snapshot(snapshot, out)
    log.info(
        "snapshot before %s: %s edges -> %s",
        snapshot.manifest["cutoff"],
        f"{sum(snapshot.manifest['num_edges'].values()):,}",
        out,
    )


def split(
    validated: str,
    out: str = "artifacts/split",
    split: SplitConfig = SplitConfig(),  # noqa: B008
    graph: GraphConfig = GraphConfig(),  # noqa: B008
) -> None:
    """Write validation and test snapshots and their evaluation targets from a validated dataset.

    Args:
        validated: a validated dataset directory (from `graphrec validate`).
        out: output directory.
        split: the window sizes in whole days (`--split.val_days`, `--split.test_days`), as in `graphrec run`.
        graph: snapshot settings.
    """
    from graphrec.graph.split import split_validated

    summary = split_validated(validated, out, split, graph)
    log.info("split at %s and %s -> %s", summary["split"]["train_end"], summary["split"]["val_end"], out)


def run(
    workdir: str = "artifacts/default",
    input: InputConfig = InputConfig(),  # noqa: B008
    shop: ShopConfig = ShopConfig(),  # noqa: B008
    validation: ValidationConfig = ValidationConfig(),  # noqa: B008
    graph: GraphConfig = GraphConfig(),  # noqa: B008
    split: SplitConfig = SplitConfig(),  # noqa: B008
    embeddings: EmbeddingStageConfig = EmbeddingStageConfig(),  # noqa: B008
    export: ExportStageConfig = ExportStageConfig(),  # noqa: B008
    backfill: BackfillConfig = BackfillConfig(epochs=12),  # noqa: B008
    ranker: RankerStageConfig = RankerStageConfig(),  # noqa: B008
    gate: GateConfig = GateConfig(),  # noqa: B008
    reload: ReloadConfig = ReloadConfig(),  # noqa: B008
    run_date: str | None = None,
    force_publish: bool = False,
) -> None:
    """Run the main job: events -> embeddings -> ranker -> quality gate -> a published (embeddings, ranker) pair.

    Stages: input, validate, snapshot, split, evaluate, model, backfill, ranker, gate, publish. A stage whose inputs
    are unchanged since it last completed is skipped, so a killed run resumes and a rerun changes nothing. Exit
    codes: 0 published or nothing to do, 1 failure, 2 bad input, 3 gated (not published), 75 busy (retry later).

    Args:
        workdir: directory for every artifact of the run; `runs/<run_date>/` holds its report.
        input: where events come from (`generated`: the shop configured by `shop`); `{run_date}` in input.path is
            replaced by the run date.
        shop: the generated shop, used when input.format is `generated`.
        validation: validation settings.
        graph: snapshot settings.
        split: temporal split settings.
        embeddings: the embedding stages (evaluation against baselines, final model).
        export: the versioned store and Feast online store the pair is published to.
        backfill: embedding versions at past cutoffs for the ranker's point-in-time rows (before the first pair).
        ranker: the homepage ranker's rows, model, training and evaluation.
        gate: tolerances of the candidate pair against the live one.
        reload: a running API to tell about a published pair.
        run_date: the run's date (YYYY-MM-DD, default today, UTC): reruns of a finished date change nothing.
        force_publish: publish the candidate even if the gate refuses it (recorded in the report and the pair).
    """
    from training.pipeline import RunSettings, run_pipeline

    settings = RunSettings(
        workdir, input, shop, validation, graph, split, embeddings, export, backfill, ranker, gate, reload, run_date,
        force_publish,
    )  # fmt: skip
    run_pipeline(settings)


def evaluate(
    input: InputConfig = InputConfig(format="contract"),  # noqa: B008
    out: str = "artifacts/evaluation",
    split: SplitConfig = SplitConfig(),  # noqa: B008
    validation: ValidationConfig = ValidationConfig(),  # noqa: B008
    graph: GraphConfig = GraphConfig(),  # noqa: B008
    embeddings: EmbeddingStageConfig = EmbeddingStageConfig(),  # noqa: B008
) -> None:
    """Evaluate graphrec's embeddings against baselines on any events input, split by time.

    Args:
        input: `--input.path`: an events file or contract directory (or an adapter's input with
            `--input.format`), or a split directory written by `graphrec split` / `graphrec run` (it has split.json).
        out: output directory: metrics.json, metrics.md, curves.png (and validated/, split/ for raw input).
        split: validation and test window sizes in days.
        validation: validation settings.
        graph: snapshot settings.
        embeddings: the target, model, optimisation and evaluation settings (as in `graphrec run`).
    """
    from training.evaluate import evaluate_events, run_evaluation

    e = embeddings
    format, path = _input_source(input)
    if (Path(path) / "split.json").exists():
        report = run_evaluation(path, out, e.target_event, e.target_node, e.model, e.train, e.evaluation)
    else:
        report = evaluate_events(
            path, out, format, e.target_event, e.target_node, split, validation, graph, e.model, e.train, e.evaluation
        )
    log.info("wrote %s/metrics.md (%d methods, %.0fs)", out, len(report["results"]), report["seconds"])


def train(
    snapshot: str,
    out: str = "artifacts/model",
    val_window: str | None = None,
    embeddings: EmbeddingStageConfig = EmbeddingStageConfig(),  # noqa: B008
    warm_start_from: str | None = None,
) -> None:
    """Train embeddings on a graph snapshot and save the model artifact.

    Args:
        snapshot: a snapshot directory (from build-graph, split or run).
        out: output directory of the model artifact.
        val_window: a split window directory (e.g. .../split/val) to early-stop on its targets.
        embeddings: the target, model and optimisation settings (as in `graphrec run`); with
            `embeddings.warm_start` a compatible model already at `out` is the starting point.
        warm_start_from: a previous model artifact to start from instead (known users and items start from its
            embeddings, which keeps the new embeddings in the previous version's space).
    """
    from training.train import train_job, warm_start_source

    previous = warm_start_from
    if previous is None and embeddings.warm_start:
        previous = warm_start_source(out, embeddings)
    e = embeddings
    metadata = train_job(snapshot, out, val_window, e.target_event, e.target_node, e.model, e.train, previous)
    if metadata is not None:
        summary = metadata["training"]
        score = f", {summary['monitor']} {summary['best_score']:.4f}" if summary.get("best_score") is not None else ""
        log.info("model written to %s (%d epochs%s)", out, summary["epochs_run"], score)


def backfill(
    validated: str,
    workdir: str = "artifacts/backfill",
    backfill: BackfillConfig = BackfillConfig(),  # noqa: B008
    graph: GraphConfig = GraphConfig(),  # noqa: B008
    embeddings: EmbeddingStageConfig = EmbeddingStageConfig(),  # noqa: B008
    export: ExportStageConfig = ExportStageConfig(),  # noqa: B008
) -> None:
    """Publish embedding versions at past cutoffs, so the ranker's training impressions each meet a version
    learned only from events before them (the feature store's point-in-time retrieval).

    Args:
        validated: a validated dataset directory (from validate or run).
        workdir: where the backfill keeps its snapshot, model and record of published cutoffs.
        backfill: the cutoffs (every `every_days` from `first_after_days` after the first event, or explicit).
        graph: how snapshots are built (as in `graphrec run`).
        embeddings: the model and its training (as in `graphrec run`); each cutoff warm-starts from the last.
        export: the embedding store and feature store the versions are published to (as in `graphrec run`).
    """
    from training.backfill import backfill_job

    summaries = backfill_job(validated, workdir, backfill, graph, embeddings, export)
    published = [s for s in summaries if not s.get("skipped")]
    log.info(
        "%d cutoffs: %d published, %d already there (store %s)",
        len(summaries),
        len(published),
        len(summaries) - len(published),
        export.store,
    )


def rank(
    validated: str,
    out: str = "artifacts/ranker",
    ranker: RankerStageConfig = RankerStageConfig(),  # noqa: B008
    export: ExportStageConfig = ExportStageConfig(),  # noqa: B008
    click_model: str | None = None,
) -> None:
    """Train and evaluate the homepage ranker on validated impressions and write its serving artifact.

    Args:
        validated: a validated dataset directory with impressions and content (from validate or run).
        out: output directory of the ranker artifact (its report.json holds the evaluation).
        ranker: rows, model, training, split and evaluation settings (as in `graphrec run`).
        export: the embedding store whose versions are the ranker's embedding inputs (`graphrec backfill`
            publishes versions older than the impressions).
        click_model: the generated shop's click_model.npz: also measure the ranker's order with the true click
            model (policy value) and its off-policy estimates.
    """
    from training.rank_job import rank_job

    report = rank_job(validated, out, ranker, export.store, export.feature_store, click_model)
    test = report["evaluation"]["test"]["overall"]
    log.info(
        "ranker written to %s: test AUC %.4f, GAUC %.4f, ECE %.4f (%.0fs)",
        out,
        test["auc"],
        test["gauc"],
        test["ece"],
        report["seconds"],
    )


def tune(
    target: str,
    validated: str | None = None,
    val_window: str | None = None,
    tune: TuneConfig = TuneConfig(),  # noqa: B008
    ranker: RankerStageConfig = RankerStageConfig(),  # noqa: B008
    embeddings: EmbeddingStageConfig = EmbeddingStageConfig(),  # noqa: B008
    export: ExportStageConfig = ExportStageConfig(),  # noqa: B008
) -> None:
    """Search the ranker's or the embeddings' hyperparameters with Optuna and write the best as the YAML group
    that `graphrec rank` or `graphrec train` / `run` reads with --config; a rerun continues the same study.

    Args:
        target: `ranker` or `embeddings`.
        validated: with `--target ranker`: a validated dataset with impressions (from validate or run).
        val_window: with `--target embeddings`: a split window (e.g. .../split/val); trials train on its snapshot
            and early-stop on its targets.
        tune: trials, seed, timeout, pruning, where the study lives, where the YAML goes, the search spaces.
        ranker: the ranker's settings (as in `graphrec rank`); each trial sets the searched keys.
        embeddings: the embeddings' settings (as in `graphrec train`); each trial sets the searched keys.
        export: the embedding store the ranker's rows read (with `ranker.embeddings`).
    """
    from training.tune import tune_job

    summary = tune_job(target, tune, validated, val_window, ranker, embeddings, export.store, export.feature_store)
    if "best" in summary:
        log.info(
            "study %r: %d complete trials, best %s %.5f (trial %d) -> %s",
            summary["study"],
            summary["complete"],
            summary["metric"],
            summary["best"]["value"],
            summary["best"]["trial"],
            summary.get("written", {}).get("yaml", "unchanged"),
        )


def export_publish(
    model: str = "artifacts/default/model",
    snapshot: str | None = None,
    export: ExportStageConfig = ExportStageConfig(),  # noqa: B008
) -> None:
    """Publish a trained model's user, item and content embeddings as the store's new live version.

    Args:
        model: a model artifact directory (from `graphrec train` or `graphrec run`).
        snapshot: the snapshot to embed on; defaults to the one the model was trained on.
        export: the store (`--export.store`), versioning and feature-store settings, as in `graphrec run`.
    """
    from graphrec.store.publish import describe_drift
    from training.export import export_job

    manifest = export_job(model, export.store, snapshot, export.versions, export.feature_store)
    log.info("version %s is live in %s (%s)", manifest["version"], export.store, describe_drift(manifest))


def export_rollback(to: str | None = None, export: ExportStageConfig = ExportStageConfig()) -> None:  # noqa: B008
    """Make an older kept version live again (verified first; the online store is rewritten with it).

    Args:
        to: the version to restore (e.g. v000003); defaults to the one before LATEST.
        export: the store (`--export.store`) and the feature-store settings used when exporting.
    """
    from graphrec.store.publish import rollback

    rollback(export.store, to, export.feature_store)


def export_sync(export: ExportStageConfig = ExportStageConfig()) -> None:  # noqa: B008
    """Write the LATEST version to the online store again (after an outage, or to fill a new Redis).

    Args:
        export: the store (`--export.store`) and the feature-store settings.
    """
    from graphrec.store.publish import sync_online

    version = sync_online(export.store, export.feature_store)
    log.info("online store holds %s again", version)


def export_list(export: ExportStageConfig = ExportStageConfig()) -> None:  # noqa: B008
    """Print the store's versions as JSON: health, created, cutoff, rows, space, stability, and which is LATEST.

    Args:
        export: the store to list (`--export.store`).
    """
    import json

    from graphrec.store.publish import store_summary

    print(json.dumps(store_summary(export.store), indent=2))


def export_verify(export: ExportStageConfig = ExportStageConfig()) -> None:  # noqa: B008
    """Check every kept version and the offline history against their checksums; print the result as JSON.

    Exits 2 when a version or history file is corrupt (the JSON names each), 0 otherwise.

    Args:
        export: the store to check (`--export.store`).
    """
    import json

    from graphrec.store.publish import verify_store
    from graphrec.store.versions import StoreError

    summary = verify_store(export.store)
    print(json.dumps(summary, indent=2))
    if summary["problems"]:
        raise StoreError(f"{export.store}: {len(summary['problems'])} problem(s): {'; '.join(summary['problems'])}")


def serve(serve: ServeConfig = ServeConfig()) -> None:  # noqa: B008
    """Serve the ranking API (POST /v1/rank, /v1/feedback, /preview, /metrics, /healthz, /readyz, /admin/reload).

    Serves the ranker at `serve.ranker` with the live version of `serve.store`; the request-time features are
    indexed from the ranker's validated tables. Stop with Ctrl-C or SIGTERM (requests in flight finish).

    Args:
        serve: host, port, workers, the ranker and store, limits, feedback and logging (see conf/serve.yaml).
    """
    from serving.server import run_server

    run_server(serve, *_LOGGING)


def _input_source(input: InputConfig) -> tuple[str, str]:
    """(format, path) of a command that reads existing files (the generated shop is `graphrec generate`'s job)."""
    if input.format == "generated":
        raise GraphrecError("input.format generated: generate the shop with `graphrec generate` and pass its directory")
    if not input.path:
        raise GraphrecError("--input.path is required: the file or directory to read")
    return input.format, input.path


DESCRIPTION = "Graph neural network homepage personalisation: events -> graph -> embeddings -> feature store."
COMMANDS = {
    "generate": generate,
    "validate": validate,
    "build-graph": build_graph,
    "split": split,
    "run": run,
    "evaluate": evaluate,
    "train": train,
    "backfill": backfill,
    "rank": rank,
    "tune": tune,
    "serve": serve,
    "export": {
        "_help": "Publish a model's embeddings to the feature store, list or verify versions, roll back or resync "
        "the online store (`graphrec export --model ...` publishes).",
        "publish": export_publish,
        "rollback": export_rollback,
        "sync": export_sync,
        "list": export_list,
        "verify": export_verify,
    },
}

GLOBAL_HELP = (
    "Options for every command (anywhere on the line): --verbose (library messages and debug lines), "
    f"--log-format {{{','.join(LOG_FORMATS)}}} (json: one JSON object per line)."
)


def _global_options(args: list[str]) -> tuple[list[str], bool, str]:
    """Take `--verbose` and `--log-format` out of the arguments (they configure logging, not the command)."""
    verbose, log_format, rest = False, "text", []
    iterator = iter(args)
    for arg in iterator:
        if arg in ("--verbose", "-v"):
            verbose = True
        elif arg in ("--log-format", "--log_format"):
            log_format = next(iterator, "")  # a missing value is refused below, like an unknown one
        elif arg.startswith(("--log-format=", "--log_format=")):
            log_format = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, verbose, log_format


def _parsed_commands(args: list[str]) -> dict:
    """The commands jsonargparse builds a parser for: introspecting every command's signature and option groups
    takes about 2 s, so a named command gets only its own parser, and the bare `graphrec --help` gets stand-ins
    that carry each command's description and no options (its listing is the same)."""
    if args and args[0] in COMMANDS:
        return {args[0]: COMMANDS[args[0]]}
    if {"-h", "--help"} & set(args):

        def stand_in(target):
            if isinstance(target, dict):
                return {name: value if name == "_help" else stand_in(value) for name, value in target.items()}

            def command() -> None:
                pass

            command.__doc__ = target.__doc__
            return command

        return {name: stand_in(target) for name, target in COMMANDS.items()}
    return COMMANDS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `graphrec` command."""
    from jsonargparse import auto_cli

    args, verbose, log_format = _global_options(list(sys.argv[1:] if argv is None else argv))
    if log_format not in LOG_FORMATS:
        print(
            f"graphrec: error: --log-format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}",
            file=sys.stderr,
        )
        return EXIT_INPUT_ERROR
    setup_logging(verbose, log_format)
    _LOGGING[:] = [log_format, verbose]
    if args[:1] != ["serve"]:  # uvicorn handles SIGTERM itself: it finishes requests in flight
        stop_on_sigterm()
    if args[:1] == ["export"] and (len(args) == 1 or args[1].startswith("-")) and not {"-h", "--help"} & set(args):
        args.insert(1, "publish")  # `graphrec export --model ...` publishes
    try:
        auto_cli(
            _parsed_commands(args),
            args=args,
            as_positional=False,
            prog="graphrec",
            description=DESCRIPTION,
            epilog=GLOBAL_HELP,
        )
    except GraphrecError as exc:
        code = getattr(exc, "exit_code", EXIT_INPUT_ERROR)
        log.debug("exit %d", code, exc_info=True)
        print(f"graphrec: {_EXIT_WORDS.get(code, 'error')}: {exc}", file=sys.stderr)
        return code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
