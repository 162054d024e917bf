"""The main scheduled job: events -> a published, quality-gated (embedding version, ranker) pair.

`graphrec run --config conf/default.yaml [--run_date 2026-02-01]` runs, each stage atomic:

    input -> validate -> snapshot -> split -> evaluate (embeddings against baselines) -> model (trained on every
    event, warm-started from the previous model) -> backfill (embedding versions at past cutoffs, first pair only)
    -> ranker (point-in-time rows, temporal evaluation, final fit) -> gate (the candidate pair against the live
    one) -> publish (the pair, in one LATEST swap) -> reload (tell a running API)

Safe to schedule (see `training.run_state`): a run holds the run lock of its workdir and of its store; each stage
records the key of the inputs its artifact was built from and is skipped when they are unchanged, so a killed run
continues from the last completed stage and a rerun of a finished run date changes nothing and says so. Leftovers of
killed runs are cleaned first. The run's report (`runs/<run_date>/run_report.json`, `report.html`, and the list of
every artifact with its checksum in `manifest.json`) is written last; `run_report.json` in the workdir is the
newest run's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from graphrec.artifacts import code_version, fingerprint_inputs, utc_now_iso, write_json_atomic
from graphrec.data.adapters import open_dataset
from graphrec.data.config import InputConfig, ShopConfig, ValidationConfig
from graphrec.data.shop import generate_shop, write_shop
from graphrec.data.validation import read_feedback, read_validated, text_encoder_of, validate_dataset
from graphrec.errors import ConfigError, InputError
from graphrec.graph.config import GraphConfig, SplitConfig
from graphrec.graph.snapshot import build_snapshot, default_cutoff, save_snapshot
from graphrec.graph.split import split_validated
from graphrec.store.publish import describe_drift
from graphrec.store.versions import IncompatibleEmbeddingsError, fault_stage
from training.config import (
    BackfillConfig,
    EmbeddingStageConfig,
    ExportStageConfig,
    GateConfig,
    RankerStageConfig,
    ReloadConfig,
)
from training.memory import peak_memory_gib, release_free_memory, reset_peak_memory, resident_memory_gib
from training.run_state import (
    RunGated,
    StageBook,
    artifact_manifest,
    clean_leftovers,
    run_locks,
    source_digest,
    stage_key,
)
from training.signals import raise_if_terminated

log = logging.getLogger("graphrec.pipeline")


@dataclass
class RunSettings:
    """Every group of `graphrec run` (see `training.cli.run` for what each one holds)."""

    workdir: str | Path = "artifacts/default"
    input: InputConfig = field(default_factory=InputConfig)
    shop: ShopConfig = field(default_factory=ShopConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    graph: GraphConfig = field(default_factory=GraphConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    embeddings: EmbeddingStageConfig = field(default_factory=EmbeddingStageConfig)
    export: ExportStageConfig = field(default_factory=ExportStageConfig)
    backfill: BackfillConfig = field(default_factory=lambda: BackfillConfig(epochs=12))
    ranker: RankerStageConfig = field(default_factory=RankerStageConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    run_date: str | None = None
    force_publish: bool = False


class _Stages:
    """Numbered stage lines: one INFO line as each stage ends (or is found up to date)."""

    def __init__(self, names: list[str]) -> None:
        self.names, self.started, self.resident = names, time.perf_counter(), None

    def start(self) -> None:
        release_free_memory()  # what the stages before freed, back to the system before this one's peak is taken
        self.started = time.perf_counter()
        self.resident = resident_memory_gib()  # what the job holds as the stage starts: its peak's floor
        reset_peak_memory()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.started, 2)

    def measures(self) -> dict[str, float | None]:
        """The stage's wall seconds so far and this process's resident high-water mark since it started (GiB;
        None where the platform cannot say): the figure that tells an operator which stage sets the job's
        memory."""
        peak, resident = peak_memory_gib(), self.resident
        return {
            "seconds": self.seconds(),
            "peak_rss_gib": None if peak is None else round(peak, 2),
            "start_rss_gib": None if resident is None else round(resident, 2),
        }

    def done(self, name: str, message: str, *args: Any) -> None:
        number = self.names.index(name) + 1
        log.info(f"[%d/%d] %s: {message} (%.1fs)", number, len(self.names), name, *args, self.seconds())

    def skipped(self, name: str, what: str) -> None:
        number = self.names.index(name) + 1
        log.info("[%d/%d] %s: up to date (%s)", number, len(self.names), name, what)


def parse_run_date(value: str | None) -> str:
    """The run date as YYYY-MM-DD (default: today, UTC), or a one-line ConfigError."""
    if value is None:
        return datetime.now(UTC).date().isoformat()
    try:
        return date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise ConfigError(f"--run_date: expected YYYY-MM-DD, got {value!r}") from None


def run_pipeline(settings: RunSettings | None = None, **overrides: Any) -> dict[str, Any]:
    """Run the job end to end into `settings.workdir` and return its report (see the module docstring).

    Raises RunBusy when another run holds the workdir or the store, and RunGated (after writing the report) when
    the quality gate kept the candidate pair from being published.
    """
    settings = replace(settings or RunSettings(), **overrides)
    run_date = parse_run_date(settings.run_date)
    train = settings.embeddings.train
    if "ddp" in str(train.strategy) and train.devices != 1:
        # Lightning's DDP launcher starts each extra process by running this very command again: a second run of
        # the job, which would find the workdir locked. The stages' own commands (`graphrec train`) take DDP.
        raise ConfigError(
            "graphrec run trains in one process: embeddings.train.strategy ddp with several devices is for "
            "`graphrec train` (train on several processes there, then `graphrec export`)"
        )
    workdir = Path(settings.workdir)
    modelled = settings.split.enabled and settings.embeddings.enabled
    store = Path(settings.export.store) if modelled and settings.export.enabled else None
    with run_locks(*([workdir] + ([store] if store is not None else []))):
        clean_leftovers(workdir)
        return _Run(settings, run_date, workdir, store).run()


class _Run:
    """One run of the job: the stages in order, each skipped when its record's key matches."""

    def __init__(self, settings: RunSettings, run_date: str, workdir: Path, store: Path | None) -> None:
        self.s, self.run_date, self.workdir, self.store = settings, run_date, workdir, store
        self.book = StageBook(workdir)
        self.run_dir = workdir / "runs" / run_date
        self.code = code_version()
        self.code_digest = source_digest()
        self.report: dict[str, Any] = {
            "kind": "run_report",
            "run_date": run_date,
            "started_at": utc_now_iso(),
            "stages": {},
            "up_to_date": [],
        }
        s = settings
        modelled = s.split.enabled and s.embeddings.enabled
        ranked = modelled and s.ranker.enabled and store is not None
        names = ["input", "validate", "snapshot"] + (["split"] if s.split.enabled else [])
        backfilled = ["backfill"] if ranked and s.ranker.embeddings else []
        names += (["evaluate", *backfilled, "model"]) if modelled else []
        names += ["ranker", "gate"] if ranked else []
        names += ["publish"] if store is not None else []
        self.names, self.ranked = names, ranked
        self.stages = _Stages(names)
        self.keys: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------------------------------

    def _key(self, stage: str, **inputs: Any) -> str:
        raise_if_terminated()  # every stage starts here
        fault_stage(stage)
        self.keys[stage] = stage_key(code=self.code_digest, **inputs)
        return self.keys[stage]

    def _reuse(self, stage: str, key: str, *artifacts: Path) -> dict[str, Any] | None:
        record = self.book.completed(stage, key, *artifacts)
        if record is not None:
            self.report["stages"][stage] = record["summary"]
            self.report["up_to_date"].append(stage)
        return record

    def _complete(self, stage: str, summary: dict[str, Any]) -> dict[str, Any]:
        summary = {**summary, **self.stages.measures()}
        self.book.complete(stage, self.keys[stage], summary)
        self.report["stages"][stage] = summary
        return summary

    # -- the run -----------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.input()
        self.validate()
        self.snapshot()
        if self.s.split.enabled:
            self.split()
        outcome = None
        if "model" in self.names:
            evaluation = self.evaluate()
            if "backfill" in self.names:  # before the model, which then warm-starts from the last backfilled one
                self.backfill(self._live(), evaluation["epochs"])
            self.model(evaluation)
            outcome = self.pair() if self.store is not None else None
        self.report["config"] = _config_dict(self.s)
        self.report["code_version"] = self.code
        self.report["stage_keys"] = self.keys
        self.report["seconds"] = round(time.perf_counter() - started, 2)
        self.report["finished_at"] = utc_now_iso()
        if outcome is not None and outcome.get("status") == "nothing to do" and self._finished_before():
            log.info(
                "run date %s already finished: every stage is up to date and pair %s is live; nothing changed",
                self.run_date,
                outcome.get("version"),
            )
            previous = json.loads((self.run_dir / "run_report.json").read_text())
            return previous | {"rerun": "nothing to do"}
        self.report["outcome"] = outcome or {"status": "done"}
        self._write_report()
        if outcome is not None and outcome["status"] == "gated":
            hint = "" if outcome.get("refused_by") == "store" else "; --force_publish true publishes it anyway"
            raise RunGated(
                f"the candidate pair was not published: {'; '.join(outcome['reasons'])} "
                f"(report: {self.run_dir / 'report.html'}{hint})"
            )
        return self.report

    def _finished_before(self) -> bool:
        path = self.run_dir / "run_report.json"
        if not path.exists():
            return False
        previous = json.loads(path.read_text())
        return previous.get("stage_keys") == self.keys and previous.get("outcome", {}).get("status") in (
            "published",
            "nothing to do",
        )

    def input(self) -> None:
        self._source_input()
        if self.s.input.feedback:  # read on every run: the API records feedback between runs
            added = self._feedback_input(self.s.input.feedback.replace("{run_date}", self.run_date))
            self.fingerprint = {**self.fingerprint, **fingerprint_inputs({"feedback": self.tables["feedback"]})}
            self.report["stages"]["input"] = {**self.report["stages"]["input"], "feedback": added}
            log.info("input: %s feedback actions from %s", f"{added['rows']:,}", added["source"])

    def _source_input(self) -> None:
        s, stage = self.s, "input"
        self.stages.start()
        raw = self.workdir / "raw"
        if s.input.format == "generated":
            key = self._key(stage, shop=asdict(s.shop))
            record = self._reuse(stage, key, raw / "manifest.json")
            if record is not None:
                self.tables, self.sources, _ = open_dataset("contract", raw)
                self.fingerprint = record["summary"]["sources"]
                self.stages.skipped(stage, "the generated shop of these settings is in raw/")
                return
            generated = generate_shop(s.shop)
            source_dir = write_shop(generated, raw)
            self.tables, self.sources, notes = open_dataset("contract", source_dir)
            stats: dict[str, Any] = {"generated": generated.stats}
            described = f"generated shop: {generated.stats['events']:,} events, {generated.stats['impressions']:,} "
            described += "impressions"
        else:
            if not s.input.path:
                raise InputError(f"input.path is required for input.format={s.input.format!r}")
            path = s.input.path.replace("{run_date}", self.run_date)
            self.tables, self.sources, notes = open_dataset(s.input.format, path)
            stats = {}
            described = f"{s.input.format} from {path}: {', '.join(sorted(self.sources))}"
        self.fingerprint = fingerprint_inputs(dict(self.sources))
        if s.input.format != "generated":
            self._key(stage, format=s.input.format, sources=_content_of(self.fingerprint))
        self._complete(stage, {"format": s.input.format, "sources": self.fingerprint, "notes": notes, **stats})
        self.stages.done(stage, "%s", described)

    def _feedback_input(self, source: str) -> dict[str, Any]:
        """Add `input.feedback` to the tables as the contract's feedback table: a feedback table file as it is, or
        the ranking API's feedback database read into `<workdir>/feedback/feedback.parquet` (written atomically,
        so a run reads one consistent copy while the API goes on recording)."""
        import polars as pl

        from graphrec.data.feedback import read_feedback_store

        if "feedback" in self.tables:
            raise InputError(
                f"input.feedback {source}: the input already has a feedback table ({self.sources['feedback']}); "
                "give the feedback one way"
            )
        path = Path(source)
        if path.is_dir():
            frame = read_feedback_store(path)
            copy = self.workdir / "feedback" / "feedback.parquet"
            copy.parent.mkdir(parents=True, exist_ok=True)
            partial = copy.with_name(f".tmp-{copy.name}")
            frame.write_parquet(partial)
            partial.replace(copy)
            rows, path = frame.height, copy
        elif path.is_file():
            reader = pl.scan_parquet if path.suffix == ".parquet" else pl.scan_csv
            rows = reader(path).select(pl.len()).collect().item()
        else:
            raise InputError(f"input.feedback {source}: no such directory or file")
        self.tables = {**self.tables, "feedback": path}
        self.sources = {**self.sources, "feedback": path}
        return {"source": source, "rows": rows}

    def validate(self) -> None:
        stage, validated = "validate", self.workdir / "validated"
        self.stages.start()
        key = self._key(stage, input=_content_of(self.fingerprint), validation=asdict(self.s.validation))
        if self._reuse(stage, key, validated / "report.json"):
            self.stages.skipped(stage, "validated/ holds these inputs")
            return
        validation = self.s.validation
        if validation.text.enabled and validation.text.cache_dir is None:
            # Kept beside the runs, so tomorrow's run encodes only the texts that are new by then.
            validation = replace(validation, text=replace(validation.text, cache_dir=str(self.workdir / "text_cache")))
        validation_report = validate_dataset(self.tables, validated, validation, self.fingerprint)
        tables = {
            name: {k: r[k] for k in ("input_rows", "used", "deduplicated", "quarantined", "reasons")}
            for name, r in validation_report["tables"].items()
        }
        summary = {"dir": str(validated), "tables": tables, "cross_checks": validation_report["cross_checks"]}
        if "text" in validation_report:
            summary["text"] = validation_report["text"]
        self._complete(stage, summary)
        self.stages.done(
            stage,
            "%s rows used, %s deduplicated, %s quarantined",
            f"{sum(r['used'] for r in tables.values()):,}",
            f"{sum(r['deduplicated'] for r in tables.values()):,}",
            f"{sum(r['quarantined'] for r in tables.values()):,}",
        )

    def snapshot(self) -> None:
        stage, out = "snapshot", self.workdir / "snapshot"
        self.stages.start()
        key = self._key(stage, validate=self.keys["validate"], graph=asdict(self.s.graph))
        if self._reuse(stage, key, out / "manifest.json"):
            self.stages.skipped(stage, "snapshot/ is this data's graph")
            return
        validated = self.workdir / "validated"
        events, items, content, _ = read_validated(validated)
        cutoff = default_cutoff(events)
        text = text_encoder_of(validated)
        feedback = read_feedback(validated)
        snapshot = build_snapshot(events, cutoff, items, content, self.s.graph, self.fingerprint, text, feedback)
        save_snapshot(snapshot, out)
        manifest = snapshot.manifest
        self._complete(
            stage,
            {
                "dir": str(out),
                "cutoff": manifest["cutoff"],
                "num_nodes": manifest["num_nodes"],
                "num_edges": manifest["num_edges"],
            },
        )
        self.stages.done(
            stage,
            "%s nodes, %s edges before %s",
            f"{sum(manifest['num_nodes'].values()):,}",
            f"{sum(manifest['num_edges'].values()):,}",
            manifest["cutoff"],
        )

    def split(self) -> None:
        stage, out, s = "split", self.workdir / "split", self.s
        self.stages.start()
        key = self._key(stage, validate=self.keys["validate"], split=asdict(s.split), graph=asdict(s.graph))
        if self._reuse(stage, key, out / "split.json"):
            self.stages.skipped(stage, "split/ is this data's split")
            return
        summary = split_validated(self.workdir / "validated", out, s.split, s.graph, fingerprint=self.fingerprint)
        self._complete(stage, {"dir": str(out), **summary})
        target = summary["targets"].get(f"test/{s.embeddings.target_event}_{s.embeddings.target_node}", {})
        self.stages.done(
            stage,
            "validation from %s, test from %s; %s test targets",
            summary["split"]["train_end"][:10],
            summary["split"]["val_end"][:10],
            f"{target.get('pairs', 0):,}",
        )

    def evaluate(self) -> dict[str, Any]:
        from training.evaluate import run_evaluation

        stage, out, e = "evaluate", self.workdir / "evaluation", self.s.embeddings
        self.stages.start()
        key = self._key(stage, split=self.keys["split"], embeddings=_embedding_settings(e))
        record = self._reuse(stage, key, out / "metrics.json")
        if record:
            self.stages.skipped(stage, "evaluation/ measured this split")
            return record["summary"]
        evaluation = run_evaluation(
            self.workdir / "split", out, e.target_event, e.target_node, e.model, e.train, e.evaluation
        )
        ours = evaluation["results"].get("graphrec", {})
        ndcg = {name: round(r["ndcg@20"], 4) for name, r in evaluation["results"].items() if "ndcg@20" in r}
        summary = self._complete(
            stage,
            {
                "dir": str(out),
                "ndcg@20": ndcg,
                "graphrec": {k: v for k, v in ours.items() if "@" in k or k in ("epochs", "history_scale")},
                "epochs": ours.get("epochs", e.train.epochs),
            },
        )
        self.stages.done(stage, "test NDCG@20 %s", ", ".join(f"{name} {value:.4f}" for name, value in ndcg.items()))
        return summary

    def model(self, evaluation: dict[str, Any]) -> None:
        from training.train import train_job, warm_start_source

        stage, out, e = "model", self.workdir / "model", self.s.embeddings
        self.stages.start()
        # The epoch count chosen on the validation window (and confirmed on the test window) is reused on all data.
        epochs = evaluation["epochs"]
        key = self._key(stage, snapshot=self.keys["snapshot"], embeddings=_embedding_settings(e), epochs=epochs)
        if self._reuse(stage, key, out / "model.json"):
            self.stages.skipped(stage, "model/ was trained on this snapshot")
            return
        previous = None
        if e.warm_start:
            # The previous run's model; on a store's first run the last backfilled one, so the published version
            # stays in the backfilled versions' embedding space (the ranker was trained on those).
            previous = warm_start_source(out, e) or warm_start_source(self.workdir / "backfill" / "model", e)
        metadata = train_job(
            self.workdir / "snapshot",
            out,
            None,
            e.target_event,
            e.target_node,
            e.model,
            replace(e.train, epochs=epochs),
            previous,
        )
        if metadata is None:  # a DDP rank other than 0: rank 0 goes on
            raise SystemExit(0)
        warm = metadata["warm_start"]
        self._complete(
            stage,
            {"dir": str(out), "epochs": epochs, "behaviour_weights": metadata["behaviour_weights"], "warm_start": warm},
        )
        start = f"warm-started from {warm['from']}" if warm else "from scratch"
        self.stages.done(stage, "%d epochs on every event, %s", epochs, start)

    # -- the pair ----------------------------------------------------------------------------------------------

    def pair(self) -> dict[str, Any]:
        """Backfill, ranker, gate and publish; returns the outcome (published / gated / nothing to do)."""
        from graphrec.store.pairs import pair_info

        live = self._live()
        live_pair = pair_info(self.store, live) if live else None
        if not self.ranked:
            return self.publish(None, live, None)
        rank = self.rank()
        publish_key = self._key(
            "publish",
            model=self.keys["model"],
            ranker=self.keys["ranker"],
            export=asdict(self.s.export.versions),
            store=str(self.store.resolve()),
        )
        record = self._published(publish_key, live, live_pair)
        if record is not None:
            self.report["stages"]["publish"] = record["summary"]
            self.report["up_to_date"] += ["gate", "publish"]
            version = record["summary"]["version"]
            note = "" if version == live else f" (LATEST is now {live}: rolled back since?)"
            self.stages.started = time.perf_counter()
            self.stages.skipped("publish", f"this model and ranker were published as {version}{note}")
            return {"status": "nothing to do", "version": version, "live": live}
        decision = self.gate(rank, live_pair)
        if not decision["blessed"] and not self.s.force_publish:
            return {"status": "gated", "reasons": decision["reasons"], "live": live}
        return self.publish(rank, live, decision)

    def _backfilled(self, version: str) -> bool:
        """Whether `version` is one this workdir's backfill published (a killed backfill then goes on)."""
        from graphrec.store.versions import list_versions, read_manifest

        state = self.workdir / "backfill" / "backfill.json"
        if not state.exists() or version not in list_versions(self.store):
            return False
        return read_manifest(self.store, version)["cutoff"] in json.loads(state.read_text()).get("published", [])

    def _live(self) -> str | None:
        from graphrec.store.versions import latest_version

        return latest_version(self.store) if self.store is not None and (self.store / "embeddings").exists() else None

    def _published(self, key: str, live: str | None, live_pair: dict[str, Any] | None) -> dict[str, Any] | None:
        """The publish record of `key` if its version is still in the store; or, where a run was killed between
        the LATEST swap and its record, the live pair's own (its pair.json names the same key)."""
        from graphrec.store.versions import list_versions

        record = self.book.completed("publish", key)
        if record is not None and record["summary"].get("version") in list_versions(self.store):
            return record
        if live_pair is not None and live_pair.get("stage_keys", {}).get("publish") == key:
            log.info("%s was published by a run killed before it recorded so; recording it now", live)
            return self.book.complete("publish", key, {"version": live, "store": str(self.store), "recovered": True})
        return None

    def backfill(self, live: str | None, chosen_epochs: int) -> None:
        """Versions at past cutoffs, each trained for `backfill.epochs` or the epoch count the evaluation chose,
        whichever is fewer: the evaluation found where more epochs stop helping (at 1M generated events 2 of them,
        where a fixed 12 overfitted and cost six times as much)."""
        from training.backfill import backfill_job, published_cutoffs

        stage, s = "backfill", self.s
        self.stages.start()
        config = replace(s.backfill, epochs=min(s.backfill.epochs or s.embeddings.train.epochs, chosen_epochs))
        key = self._key(
            stage,
            validate=self.keys["validate"],
            backfill=asdict(config),
            embeddings=_embedding_settings(s.embeddings),
            graph=asdict(s.graph),
        )
        record = self.book.completed(stage, key)
        if record is not None and record["summary"].get("store") == str(self.store.resolve()):
            wanted = {c["cutoff"] for c in record["summary"].get("cutoffs", [])}
            if wanted <= published_cutoffs(self.store, self.workdir / "backfill"):
                self._reuse(stage, key)
                self.stages.skipped(stage, "the store holds a version at every cutoff")
                return
        if live is not None and not self._backfilled(live):
            # Backfilling publishes each version in turn: on a store with a live version that would move LATEST
            # away from it (and leave it moved if this run's pair is gated). Every published version's cutoff is
            # its run's data end, so later impressions meet it: the daily versions are the rows' history.
            self.report["stages"][stage] = {"skipped": f"the store has a live version ({live}): no backfill"}
            self.stages.skipped(stage, f"the store has a live version ({live}); its versions are the rows' history")
            return
        e = replace(s.embeddings, warm_start=True)
        validated, work = self.workdir / "validated", self.workdir / "backfill"
        summaries = backfill_job(validated, work, config, s.graph, e, s.export)
        published = [x for x in summaries if not x.get("skipped")]
        self._complete(stage, {"cutoffs": summaries, "epochs": config.epochs, "store": str(self.store.resolve())})
        self.stages.done(
            stage,
            "%d embedding versions at past cutoffs, %d epochs each (%d already in the store)",
            len(published),
            config.epochs,
            len(summaries) - len(published),
        )

    def rank(self) -> dict[str, Any]:
        from training.rank_job import rank_job

        stage, s = "ranker", self.s
        out, evaluation_out = self.workdir / "ranker", self.workdir / "ranker-evaluation"
        self.stages.start()
        cutoff = datetime.fromisoformat(self.report["stages"]["snapshot"]["cutoff"])
        history = _history_before(self.store, cutoff) if s.ranker.embeddings else []
        key = self._key(
            stage,
            validate=self.keys["validate"],
            ranker=asdict(s.ranker),
            history=history,
            ttl_days=s.export.feature_store.ttl_days,
        )
        record = self._reuse(stage, key, out / "report.json", evaluation_out / "ranker.json")
        if record:
            self.stages.skipped(stage, "ranker/ was trained on these rows")
            return record["summary"]
        click_model = self._click_model()
        report = rank_job(
            self.workdir / "validated",
            out,
            s.ranker,
            self.store if s.ranker.embeddings else None,
            s.export.feature_store,
            click_model,
            evaluation_out,
        )
        summary = self._complete(stage, {"dir": str(out), **report})
        overall = report["evaluation"]["test"]["overall"]
        self.stages.done(
            stage,
            "test AUC %.4f, logloss %.5f, GAUC %.4f on %s impressions",
            overall["auc"],
            overall["logloss"],
            overall["gauc"],
            f"{report['rows']['test']:,}",
        )
        return summary

    def _click_model(self) -> Path | None:
        """A generated shop's true click model: in raw/, or beside the contract files the input names."""
        places = [self.workdir / "raw"]
        if self.s.input.format == "contract" and self.s.input.path:
            places.append(Path(self.s.input.path.replace("{run_date}", self.run_date)))
        return next((p / "click_model.npz" for p in places if (p / "click_model.npz").exists()), None)

    def gate(self, rank: dict[str, Any], live_pair: dict[str, Any] | None) -> dict[str, Any]:
        from training.gate import gate_decision, pair_metrics

        stage, s = "gate", self.s
        self.stages.start()
        candidate = pair_metrics(self.report["stages"]["evaluate"], rank)
        comparison = None
        if live_pair is not None:
            comparison = self._compare(live_pair)
        decision = gate_decision(candidate, (live_pair or {}).get("metrics"), comparison, s.gate)
        decision |= {"candidate": candidate, "comparison": comparison, "enabled": s.gate.enabled}
        if live_pair is not None:
            decision["against"] = live_pair["version"]
        if not s.gate.enabled:
            decision["blessed"], decision["note"] = True, "gate disabled: every candidate is published"
        decision["forced"] = bool(s.force_publish and not decision["blessed"])
        self.report["stages"][stage] = decision | self.stages.measures()
        verdict = "blessed" if decision["blessed"] else ("FORCED past" if decision["forced"] else "NOT published")
        against = f"against live {live_pair['version']}" if live_pair else "first pair"
        self.stages.done(
            stage,
            "%s (%s; %d checks%s)",
            verdict,
            against,
            len(decision["checks"]),
            "; " + "; ".join(decision["reasons"]) if decision["reasons"] else "",
        )
        return decision

    def _compare(self, live_pair: dict[str, Any]) -> dict[str, Any]:
        """The candidate and the live ranker on the impressions after the last one the live ranker was trained
        on, which neither has seen. Like for like: the candidate's settings are trained on the rows up to that
        same impression (for the epoch count its evaluation chose), so both rankers know the same past."""
        import shutil

        import numpy as np

        from graphrec.rank.artifact import load_ranker, read_ranker_info
        from graphrec.store.pairs import paired_ranker
        from training.rank_job import build_rows, compare_baseline, load_click_model, new_ranker, split_rows
        from training.rank_system import fit_ranker

        s = self.s
        store = self.store if s.ranker.embeddings else None
        baseline = paired_ranker(self.store, live_pair["version"])
        last = read_ranker_info(baseline).get("data", {}).get("last_impression")
        rows = build_rows(self.workdir / "validated", s.ranker, store, s.export.feature_store)
        parts = split_rows(rows, s.ranker.split)
        click_model = self._click_model()
        truth = load_click_model(click_model) if click_model is not None and s.ranker.policy_requests else None
        candidate, _ = load_ranker(self.workdir / "ranker-evaluation")
        holdout, fit = parts["test"], "the candidate's evaluation fit (trained before its test days)"
        if last is not None:
            after = (rows.frame["timestamp"] > datetime.fromisoformat(last)).to_numpy()
            holdout = np.flatnonzero(after)
            clicks = int(rows.frame["clicked"].gather(holdout).sum()) if len(holdout) else 0
            known = parts["all"][~after[parts["all"]]]
            if clicks >= s.gate.min_holdout_clicks and len(known):
                training = self.report["stages"]["ranker"]["evaluation"]["training"]
                epochs = int(training.get("best_epoch", training["epochs_run"]))
                work = self.workdir / ".ranker.work" / "gate"
                try:
                    candidate, _ = fit_ranker(
                        new_ranker(rows, s.ranker),
                        rows.arrays(known, s.ranker.embeddings, keys=False),
                        None,
                        replace(s.ranker.train, epochs=epochs),
                        work,
                    )
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                fit = f"the candidate's settings trained on the {len(known):,} rows up to {last} ({epochs} epochs)"
        result = compare_baseline(
            baseline, candidate, rows, holdout, s.ranker, self.workdir / "validated", truth, store,
            s.export.feature_store,
        )  # fmt: skip
        return result | {"candidate_fit": fit}

    def publish(self, rank: dict[str, Any] | None, live: str | None, decision: dict[str, Any] | None) -> dict:
        from graphrec.rank.artifact import read_ranker_info
        from training.export import export_job

        stage, s = "publish", self.s
        self.stages.start()
        key = self.keys.get("publish") or self._key("publish", model=self.keys["model"])
        record = self.book.completed(stage, key)
        if record is not None:  # the embeddings alone (no ranker stage), published by an earlier run
            self.report["stages"][stage] = record["summary"]
            self.report["up_to_date"].append(stage)
            self.stages.skipped(stage, f"published as {record['summary']['version']}")
            return {"status": "nothing to do", "version": record["summary"]["version"], "live": live}
        ranker = self.workdir / "ranker" if rank is not None else None
        space = None
        if ranker is not None and s.ranker.embeddings:
            space = (read_ranker_info(ranker).get("embeddings") or {}).get("space")
        metrics = {"evaluation": self.report["stages"]["evaluate"].get("graphrec", {})}
        pair = None
        if decision is not None:
            pair = {
                "run_date": self.run_date,
                "workdir": str(self.workdir),
                "metrics": decision["candidate"],
                "gate": {k: decision[k] for k in ("blessed", "forced", "checks", "reasons", "against")},
                "stage_keys": dict(self.keys),
            }
        try:
            manifest = export_job(
                self.workdir / "model", s.export.store, None, s.export.versions, s.export.feature_store, metrics,
                ranker, space, pair,
            )  # fmt: skip
        except IncompatibleEmbeddingsError as exc:  # the new version left the ranker's embedding space
            self.report["stages"][stage] = {"refused": str(exc), **self.stages.measures()}
            return {"status": "gated", "reasons": [str(exc)], "live": live, "refused_by": "store"}
        drift = manifest["drift"]
        summary = self._complete(
            stage,
            {
                "store": s.export.store,
                "version": manifest["version"],
                "space": manifest["space"],
                "rows": manifest["rows"],
                "ranker": str(Path(s.export.store) / "rankers" / manifest["version"]) if ranker else None,
                "forced": bool(decision and decision["forced"]),
                "drift": {k: drift.get(k) for k in ("previous_version", "mean_cosine", "compatible")},
                "online_store": s.export.feature_store.online_store if s.export.feature_store.enabled else None,
            },
        )
        self.stages.done(
            stage,
            "%s %s live in %s (%s; online: %s)",
            "pair" if ranker else "version",
            manifest["version"],
            s.export.store,
            describe_drift(manifest),
            summary["online_store"] or "disabled",
        )
        self.reload()
        return {"status": "published", "version": manifest["version"], "previous": live}

    def reload(self) -> None:
        config = self.s.reload
        if not config.url:
            return
        from training.notify import tell_api_to_reload

        self.report["reload"] = tell_api_to_reload(config)

    # -- the report --------------------------------------------------------------------------------------------

    def _write_report(self) -> None:
        from training.report import write_html_report

        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / "run_report.json", self.report)
        try:
            write_html_report(self.report, self.workdir, self.run_dir)
        except Exception:  # the pair is published by now: a report that cannot be drawn must not fail the run
            log.exception("the HTML report could not be written; run_report.json has every figure")
        artifacts = [self.workdir / name for name in ("validated", "snapshot", "split", "evaluation", "model")]
        artifacts += [self.workdir / name for name in ("ranker", "ranker-evaluation")]
        artifacts += [self.run_dir / "run_report.json", self.run_dir / "report.html"]
        if self.s.input.format == "generated":
            artifacts.append(self.workdir / "raw")
        manifest = {
            "kind": "run_manifest",
            "run_date": self.run_date,
            "created_at": utc_now_iso(),
            "outcome": self.report["outcome"],
            "files": artifact_manifest(self.workdir, [p for p in artifacts if p.exists()]),
        }
        write_json_atomic(self.run_dir / "manifest.json", manifest)
        write_json_atomic(self.workdir / "run_report.json", self.report)
        log.info(
            "done in %.1fs (%s); report: %s",
            self.report["seconds"],
            self.report["outcome"]["status"],
            self.run_dir / "report.html",
        )


def _content_of(fingerprint: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The part of an input fingerprint that is the data (not where it lies)."""
    return {name: {"bytes": f["bytes"], "sha256": f["sha256"]} for name, f in fingerprint.items()}


def _embedding_settings(e: EmbeddingStageConfig) -> dict[str, Any]:
    settings = asdict(e)
    settings["train"] = {k: v for k, v in settings["train"].items() if k not in ("devices", "strategy", "accelerator")}
    return settings


def _history_before(store: Path, data_end: datetime) -> list[list[str]]:
    """(entity, version, cutoff) of the offline history's files (what the ranker's point-in-time rows read) with a
    cutoff before `data_end` (the snapshot's), orphans left out. Retention of version directories does not change
    it (the history outlives them), and a version made from this very data (cutoff `data_end`) is not among them,
    so publishing a pair does not make the next run retrain the ranker on the same rows."""
    import polars as pl

    from graphrec.store.feast_repo import repo_dir
    from graphrec.store.versions import orphan_versions

    root = repo_dir(store) / "data"
    if not root.is_dir():
        return []
    orphans = set(orphan_versions(store)) if (store / "embeddings").is_dir() else set()
    found = []
    for path in sorted(root.glob("*/v*.parquet")):
        if path.stem in orphans:
            continue
        cutoff = pl.scan_parquet(path).select(pl.col("event_timestamp").max()).collect().item()
        if cutoff is not None and cutoff < data_end:
            found.append([path.parent.name, path.stem, cutoff.isoformat()])
    return found


def _config_dict(settings: RunSettings) -> dict[str, Any]:
    config = asdict(settings)
    config["workdir"] = str(settings.workdir)
    return config
