"""Hyperparameter search with Optuna: `graphrec tune --target ranker` or `--target embeddings`.

Each target has one study, named after it, in `<tune.workdir>/study.db` (SQLite), so a search continues where it
stopped: a rerun of the same command keeps the complete trials, marks the trial a killed run left RUNNING as failed
(the run holds the study's lock, so no live process owns it) and runs trials until the study holds `tune.n_trials`
complete ones; a rerun after that trains nothing. The sampler is TPE, seeded per trial by `tune.seed` and the number
of trials before it, so trial k draws the same values whether or not the search was killed before it. A trial trains
with the target's own code: the ranker's `fit_split` on rows built once per run (objective: the best validation
loss, minimised), or the embeddings' `train_embeddings` on the validation window's snapshot (objective: the
validation NDCG@k that early stopping follows, maximised), both pruned by the median rule on the metric of each
validated epoch. At the end the best trial's values are written as the target's group in a YAML that the target's
command reads with `--config` (`graphrec rank`, `graphrec train` / `graphrec run`), with the study's trials as CSV
and its optimisation history and parameter importances as PNG beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import polars as pl
import yaml
from optuna.trial import FrozenTrial, TrialState

from graphrec.artifacts import utc_now_iso
from graphrec.errors import ConfigError, GraphrecError
from training.config import (
    EmbeddingSearchSpace,
    EmbeddingStageConfig,
    RankerSearchSpace,
    RankerStageConfig,
    TuneConfig,
)

log = logging.getLogger("graphrec.tune")

TARGETS = ("ranker", "embeddings")
# The keys each search sets (its space in training/config.py: RankerSearchSpace, EmbeddingSearchSpace).
SEARCHED = {
    "ranker": {
        "ranker.model.cross_layers",
        "ranker.model.hidden",
        "ranker.model.dropout",
        "ranker.train.lr",
        "ranker.train.weight_decay",
        "ranker.train.batch_size",
    },
    "embeddings": {
        "embeddings.model.dim",
        "embeddings.model.num_layers",
        "embeddings.train.lr",
        "embeddings.train.l2",
        "embeddings.train.aux_weight",
    },
}
BEST = {"minimize": "lowest", "maximize": "highest"}
# Keys of the target's group that no trial reads (the ranker's final fit and evaluation, the embeddings' baselines):
# a rerun may change them without starting another study.
UNUSED_KEYS = {
    "ranker": ("ranker.enabled", "ranker.final_fit", "ranker.policy_requests", "ranker.top_k", "ranker.slices."),
    "embeddings": ("embeddings.enabled", "embeddings.warm_start", "embeddings.evaluation."),
}


@dataclass
class Search:
    """What a study tunes: the group, its metric and direction, how a trial draws its values and how it trains."""

    group: str
    metric: str
    direction: str
    usage: str  # how the written YAML is used, with {out} for its path
    suggest: Callable[[optuna.Trial], dict[str, Any]]
    # Loads the data (once per run, only when trials remain) and returns fit(trial, values, scratch) -> (value,
    # summary), which raises optuna.TrialPruned when the pruner stops the trial.
    prepare: Callable[[], Callable[[optuna.Trial, dict[str, Any], Path], tuple[float, dict[str, Any]]]]
    settings: dict[str, Any]
    base_changes: dict[str, Any]


def tune_job(
    target: str,
    tune: TuneConfig | None = None,
    validated: str | Path | None = None,
    val_window: str | Path | None = None,
    ranker: RankerStageConfig | None = None,
    embeddings: EmbeddingStageConfig | None = None,
    store: str | Path | None = None,
    feature_store=None,
) -> dict[str, Any]:
    """Run (or continue) the target's study until it holds `tune.n_trials` complete trials and write the best
    values as YAML with the trials' CSV and plots beside it; returns a summary of the study.

    Args:
        target: `ranker` (needs `validated`, and `store` with `ranker.embeddings`) or `embeddings` (needs
            `val_window`, a split window directory: trials train on its snapshot and validate on its targets).
        tune: the search settings.
        ranker / embeddings: the target's group; each trial sets the searched keys and keeps the others.
    """
    tune = tune or TuneConfig()
    if target not in TARGETS:
        raise ConfigError(f"--target must be one of {', '.join(TARGETS)}, not {target!r}")
    if target == "ranker":
        search = ranker_search(ranker or RankerStageConfig(), tune.ranker_space, validated, store, feature_store)
    else:
        search = embedding_search(embeddings or EmbeddingStageConfig(), tune.embeddings_space, val_window)
    search.settings |= {"tune.seed": tune.seed, "tune.pruner": [tune.pruner_warmup_epochs, tune.pruner_startup_trials]}
    workdir = Path(tune.workdir)
    out = Path(tune.out) if tune.out else Path("conf") / "tuned" / f"{target}.yaml"
    with study_lock(workdir, target):
        study, storage = open_study(target, tune, search)
        fail_running_trials(study, storage, "the run holding it was killed")
        scratch_root = workdir / "trials"
        for left in scratch_root.glob(f"{target}-*"):  # left by a killed run
            shutil.rmtree(left, ignore_errors=True)
        done = _count(study, TrialState.COMPLETE)
        ran = 0
        if done >= tune.n_trials:
            log.info(
                "study %r already holds %d complete trials (tune.n_trials %d): nothing to run",
                target,
                done,
                tune.n_trials,
            )
        else:
            log.info(
                "study %r in %s: %d of %d complete trials, %d to run",
                target,
                storage.url,
                done,
                tune.n_trials,
                tune.n_trials - done,
            )
            ran = _run_trials(study, storage, search, tune, scratch_root)
        summary = study_summary(study, search, storage.url)
        summary["ran"] = ran
        if summary["complete"] and (ran or not out.exists()):
            summary["written"] = write_results(study, search, out, storage.url)
        elif not summary["complete"]:
            log.warning("study %r has no complete trial yet: nothing written", target)
    return summary


def _run_trials(
    study: optuna.Study, storage: optuna.storages.RDBStorage, search: Search, tune: TuneConfig, scratch: Path
) -> int:
    """Run trials until the study holds `tune.n_trials` complete ones or the timeout passes; returns how many ran.
    Each trial trains in its own directory under `scratch`, removed when it ends."""
    fit = search.prepare()
    deadline = time.monotonic() + 60 * tune.timeout_minutes if tune.timeout_minutes else None

    def objective(trial: optuna.Trial) -> float:
        values = search.suggest(trial)
        trial.set_user_attr("config", values)
        directory = scratch / f"{search.group}-{trial.number:04d}"
        try:
            value, summary = fit(trial, values, directory)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # SIGTERM or Ctrl-C: not a result of these values
                trial.set_user_attr("interrupted", type(exc).__name__)
            raise
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        trial.set_user_attr("epochs_run", summary.get("epochs_run"))
        trial.set_user_attr("best_epoch", summary.get("best_epoch"))
        return value

    ran = 0
    try:
        while _count(study, TrialState.COMPLETE) < tune.n_trials:
            if deadline is not None and time.monotonic() > deadline:
                log.info(
                    "tune.timeout_minutes (%s) reached after %d trials; a rerun continues", tune.timeout_minutes, ran
                )
                break
            # A fresh sampler per trial, seeded by the trials drawn before it: TPE then draws trial k's values from
            # the seed and the study's history alone, so a search killed and resumed draws what an unbroken one
            # does (the killed trial is failed, which TPE ignores, and not counted here).
            study.sampler = optuna.samplers.TPESampler(seed=tune.seed + _draws(study))
            study.optimize(objective, n_trials=1, callbacks=[_log_trial(search, tune.n_trials)])
            ran += 1
    except BaseException:
        fail_running_trials(study, storage, "its run was stopped")
        raise
    return ran


def ranker_search(
    config: RankerStageConfig,
    space: RankerSearchSpace,
    validated: str | Path | None,
    store: str | Path | None = None,
    feature_store=None,
) -> Search:
    """The ranker's search: `space` over `ranker.model` and `ranker.train`, the best validation loss minimised."""
    if validated is None:
        raise ConfigError("--validated is required with --target ranker: the validated dataset with impressions")
    if config.embeddings and store is None:
        raise ConfigError("ranker.embeddings is on: --export.store must name the embedding store")
    hidden = {"-".join(map(str, widths)): list(widths) for widths in space.hidden}

    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        return {
            "ranker.model.cross_layers": trial.suggest_int("ranker.model.cross_layers", *space.cross_layers),
            # Optuna's choices are scalars: the widths travel as "128-64".
            "ranker.model.hidden": hidden[trial.suggest_categorical("ranker.model.hidden", list(hidden))],
            "ranker.model.dropout": _float(trial, "ranker.model.dropout", space.dropout),
            "ranker.train.lr": _float(trial, "ranker.train.lr", space.lr, log=True),
            "ranker.train.weight_decay": _float(trial, "ranker.train.weight_decay", space.weight_decay, log=True),
            "ranker.train.batch_size": trial.suggest_categorical("ranker.train.batch_size", space.batch_size),
        }

    def prepare():
        from optuna_integration import PyTorchLightningPruningCallback

        from training.rank_job import build_rows, fit_split, split_rows

        started = time.perf_counter()
        rows = build_rows(validated, config, store, feature_store)
        parts = split_rows(rows, config.split)
        log.info(
            "ranker rows: %s train, %s validation impressions (%.0fs)",
            f"{len(parts['train']):,}",
            f"{len(parts['validation']):,}",
            time.perf_counter() - started,
        )

        def fit(trial: optuna.Trial, values: dict[str, Any], scratch: Path) -> tuple[float, dict[str, Any]]:
            # optuna-integration's callback reports the metric after each validation and raises TrialPruned when
            # the pruner says so; it imports `lightning.pytorch`, the Lightning 2.x package graphrec trains with.
            pruning = PyTorchLightningPruningCallback(trial, monitor="val_loss")
            _, summary = fit_split(rows, parts, with_values(config, values, "ranker"), scratch, callbacks=[pruning])
            return summary["best_val_loss"], summary

        return fit

    used_store = str(Path(store).resolve()) if config.embeddings else None  # rows read no store without embeddings
    settings = {"validated": str(Path(validated).resolve()), "store": used_store}
    return Search(
        group="ranker",
        metric="val_loss",
        direction="minimize",
        usage="graphrec rank --config {out} --validated ...",
        suggest=suggest,
        prepare=prepare,
        settings=settings | _base_settings(config, "ranker"),
        base_changes=_changed(config, RankerStageConfig(), "ranker"),
    )


def embedding_search(
    config: EmbeddingStageConfig, space: EmbeddingSearchSpace, val_window: str | Path | None
) -> Search:
    """The embeddings' search: `space` over `embeddings.model` and `embeddings.train`, the validation NDCG@k that
    early stopping follows maximised."""
    if val_window is None:
        raise ConfigError("--val_window is required with --target embeddings: a split window such as .../split/val")
    train = config.train
    if train.epochs < train.eval_every:
        raise ConfigError(
            f"embeddings.train.epochs ({train.epochs}) is below embeddings.train.eval_every ({train.eval_every}): "
            "a trial would never validate"
        )
    if train.devices != 1 or train.strategy not in ("auto", "single_device"):
        raise ConfigError("graphrec tune trains each trial in one process: embeddings.train.devices must be 1")
    if isinstance(train.fanouts, list) and space.num_layers[0] != space.num_layers[1]:
        raise ConfigError(
            "embeddings.train.fanouts needs one entry per layer: fix tune.embeddings_space.num_layers (e.g. [2, 2])"
        )
    metric = f"val_ndcg@{train.k}"

    def suggest(trial: optuna.Trial) -> dict[str, Any]:
        return {
            "embeddings.model.dim": trial.suggest_categorical("embeddings.model.dim", space.dim),
            "embeddings.model.num_layers": trial.suggest_int("embeddings.model.num_layers", *space.num_layers),
            "embeddings.train.lr": _float(trial, "embeddings.train.lr", space.lr, log=True),
            "embeddings.train.l2": _float(trial, "embeddings.train.l2", space.l2, log=True),
            "embeddings.train.aux_weight": _float(trial, "embeddings.train.aux_weight", space.aux_weight),
        }

    def prepare():
        from optuna_integration import PyTorchLightningPruningCallback

        from graphrec.graph.snapshot import load_snapshot
        from graphrec.graph.tasks import task_from_snapshot, window_task
        from training.trainer import train_embeddings

        window = Path(val_window)
        # The window's targets are indexed by its own snapshot, so trials train on that snapshot (as `graphrec train
        # --val_window` does when the snapshot it is given has other indices).
        val_task = window_task(window, config.target_event, config.target_node)
        task = task_from_snapshot(load_snapshot(window / "snapshot"), None, config.target_event, config.target_node)

        def fit(trial: optuna.Trial, values: dict[str, Any], scratch: Path) -> tuple[float, dict[str, Any]]:
            pruning = PyTorchLightningPruningCallback(trial, monitor=metric)
            trial_config = with_values(config, values, "embeddings")
            _, summary = train_embeddings(
                task, val_task, trial_config.model, trial_config.train, scratch, resume=False, callbacks=[pruning]
            )
            return summary["best_score"], summary

        return fit

    return Search(
        group="embeddings",
        metric=metric,
        direction="maximize",
        usage="graphrec train --config {out} --snapshot ...; graphrec run --config conf/default.yaml --config {out}",
        suggest=suggest,
        prepare=prepare,
        settings={"val_window": str(Path(val_window).resolve())} | _base_settings(config, "embeddings"),
        base_changes=_changed(config, EmbeddingStageConfig(), "embeddings"),
    )


def _float(trial: optuna.Trial, name: str, bounds: list[float], log: bool = False) -> float:
    """A float drawn in `bounds`, rounded to 3 significant digits: what the trial trains with and the YAML holds."""
    low, high = bounds
    return min(max(float(f"{trial.suggest_float(name, low, high, log=log):.3g}"), low), high)


def with_values(config, values: dict[str, Any], group: str):
    """A copy of `config` (the `group` dataclass) with each dotted key of `values` (`ranker.model.dropout`) set;
    the copies are checked like any config."""
    return _replace_nested(config, nested(values)[group])


def _replace_nested(config, changes: dict[str, Any]):
    return replace(
        config,
        **{k: _replace_nested(getattr(config, k), v) if isinstance(v, dict) else v for k, v in changes.items()},
    )


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """{"a.b.c": 1} -> {"a": {"b": {"c": 1}}}."""
    tree: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (lists are values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _base_settings(config, group: str) -> dict[str, Any]:
    """The group's keys a trial reads but does not tune: a study continues only with the same ones."""
    unused = UNUSED_KEYS[group]
    return {
        k: v
        for k, v in flat(asdict(config), f"{group}.").items()
        if k not in SEARCHED[group] and not any(k == u or (u.endswith(".") and k.startswith(u)) for u in unused)
    }


def _changed(config, default, group: str) -> dict[str, Any]:
    """The trials' fixed settings that differ from the defaults (named in the YAML's header)."""
    defaults = _base_settings(default, group)
    return {k: v for k, v in _base_settings(config, group).items() if defaults.get(k) != v}


@contextlib.contextmanager
def study_lock(workdir: Path, target: str) -> Iterator[None]:
    """Hold the target's study lock (one search of a study at a time; a killed process releases it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / f".{target}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GraphrecError(f"{workdir}: another graphrec tune is running study {target!r}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_study(target: str, tune: TuneConfig, search: Search) -> tuple[optuna.Study, optuna.storages.RDBStorage]:
    """The target's study in `<workdir>/study.db`, created or loaded; a loaded one must have been run with the
    same fixed settings, search space, seed and pruner."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial comes from `_log_trial`
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()  # its warnings go through graphrec's log format
    url = f"sqlite:///{(Path(tune.workdir) / 'study.db').resolve()}"
    storage = optuna.storages.RDBStorage(url)
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=tune.pruner_startup_trials, n_warmup_steps=tune.pruner_warmup_epochs
    )
    study = optuna.create_study(
        storage=storage, study_name=target, direction=search.direction, pruner=pruner, load_if_exists=True
    )
    settings = {**search.settings, "space": asdict(getattr(tune, f"{search.group}_space"))}
    settings = json.loads(json.dumps(settings, default=str))  # as the storage gives it back (tuples are lists)
    recorded = study.user_attrs.get("settings")
    if recorded is None:
        study.set_user_attr("settings", settings)
        study.set_user_attr("metric", search.metric)
    else:
        now, before = flat(settings), flat(recorded)
        differ = sorted(k for k in now.keys() | before.keys() if now.get(k) != before.get(k))
        if differ:
            raise ConfigError(
                f"{url}: study {target!r} was run with other settings ({', '.join(differ)}); rerun it with the same "
                "ones, or give a new study another --tune.workdir"
            )
    return study, storage


def fail_running_trials(study: optuna.Study, storage: optuna.storages.RDBStorage, why: str) -> None:
    """Mark the study's RUNNING trials failed (call under the study lock: no live process owns them)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "interrupted", why)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        log.warning("trial %d was running when %s: marked failed, not counted", trial.number, why)


def _count(study: optuna.Study, state: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=(state,)))


def _draws(study: optuna.Study) -> int:
    """Trials that drew values and ended on their own (interrupted ones drew values nobody kept)."""
    return sum(
        1 for t in study.get_trials(deepcopy=False) if t.state.is_finished() and "interrupted" not in t.user_attrs
    )


def _log_trial(search: Search, n_trials: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    def log_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        values = ", ".join(f"{k.split('.', 1)[1]}={_short(v)}" for k, v in trial.user_attrs.get("config", {}).items())
        complete = _count(study, TrialState.COMPLETE)
        if trial.state == TrialState.COMPLETE:
            best = study.best_trial
            log.info(
                "trial %d complete (%d/%d): %s %.5f after %s epochs; best %.5f (trial %d); %s",
                trial.number,
                complete,
                n_trials,
                search.metric,
                trial.value,
                trial.user_attrs.get("epochs_run"),
                best.value,
                best.number,
                values,
            )
        elif trial.state == TrialState.PRUNED:
            step = trial.last_step
            log.info(
                "trial %d pruned after epoch %s (%s %.5f); %s",
                trial.number,
                None if step is None else step + 1,
                search.metric,
                trial.intermediate_values.get(step, float("nan")),
                values,
            )

    return log_trial


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def study_summary(study: optuna.Study, search: Search, url: str) -> dict[str, Any]:
    """Counts of the study's trials by state and its best trial."""
    trials = study.get_trials(deepcopy=False)
    summary: dict[str, Any] = {
        "study": study.study_name,
        "storage": url,
        "metric": search.metric,
        "direction": search.direction,
        **{state.name.lower(): sum(t.state == state for t in trials) for state in TrialState},
    }
    if summary["complete"]:
        best = study.best_trial
        summary["best"] = {"trial": best.number, "value": best.value, "values": best.user_attrs["config"]}
    return summary


def write_results(study: optuna.Study, search: Search, out: Path, url: str) -> dict[str, str]:
    """The best trial's values as `out` (YAML), the trials as CSV and the plots as PNG beside it; returns the paths."""
    best = study.best_trial
    counts = study_summary(study, search, url)
    header = [
        f"Tuned by graphrec tune --target {search.group}: the best of study {study.study_name!r} in {url}",
        f"{counts['complete']} complete trials ({counts['pruned']} pruned, {counts['fail']} failed); best "
        f"{search.metric} {best.value:.6g} ({BEST[search.direction]}, trial {best.number}); written {utc_now_iso()}",
        f"Use: {search.usage.format(out=out)}",
    ]
    if search.base_changes:
        header.append("The trials' other settings that differ from the defaults (pass them too):")
        header += [f"  {k}: {_yaml_value(v)}" for k, v in sorted(search.base_changes.items())]
    written = {"yaml": str(out)}
    write_yaml_atomic(out, nested(best.user_attrs["config"]), header)
    stem = out.name.rsplit(".", 1)[0]
    csv = out.parent / f"{stem}.trials.csv"
    write_atomically(csv, lambda path: trials_frame(study, search.metric).write_csv(path))
    written["trials"] = str(csv)
    written |= write_plots(study, search.metric, out.parent, stem)
    log.info(
        "best %s %.5f (trial %d; %d complete trials): wrote %s",
        search.metric,
        best.value,
        best.number,
        counts["complete"],
        ", ".join(written.values()),
    )
    return written


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def trials_frame(study: optuna.Study, metric: str) -> pl.DataFrame:
    """One row per trial: number, state, the metric, epochs, start, seconds, then each searched key."""
    rows = []
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for trial in trials for name in trial.user_attrs.get("config", {})})
    for trial in trials:
        config = trial.user_attrs.get("config", {})
        seconds = None
        if trial.datetime_start and trial.datetime_complete:
            seconds = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                metric: trial.value,
                "epochs_reported": len(trial.intermediate_values),
                "best_epoch": trial.user_attrs.get("best_epoch"),
                "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
                "seconds": seconds,
                "interrupted": trial.user_attrs.get("interrupted"),
                **{name: _cell(config.get(name)) for name in names},
            }
        )
    return pl.DataFrame(rows, infer_schema_length=None)


def _cell(value: Any) -> Any:
    return str(value) if isinstance(value, list) else value


def write_plots(study: optuna.Study, metric: str, directory: Path, stem: str) -> dict[str, str]:
    """The optimisation history and, with 2 or more complete trials, the parameter importances as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    written = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        plots = {"history": lambda: plot_optimization_history(study, target_name=metric)}
        if _count(study, TrialState.COMPLETE) >= 2:
            # PED-ANOVA: Optuna's default (fANOVA) needs scikit-learn, which graphrec does not depend on.
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            plots["importance"] = lambda: plot_param_importances(study, evaluator=evaluator, target_name=metric)
        else:
            log.info("parameter importances need 2 complete trials: no importance plot yet")
        for name, plot in plots.items():
            try:
                axes = plot()
            except (ValueError, RuntimeError) as exc:  # e.g. every searched key fixed: nothing to rank
                log.info("no %s plot: %s", name, exc)
                continue
            figure = axes.figure
            figure.set_size_inches(8, 5)
            path = directory / f"{stem}.{name}.png"
            write_atomically(
                path, lambda tmp, figure=figure: figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
            )
            plt.close(figure)
            written[name] = str(path)
    return written


def write_yaml_atomic(path: str | Path, payload: dict[str, Any], header: list[str] | None = None) -> None:
    """Write a YAML document (after a `#` comment header) through a temporary file and an atomic rename."""
    comments = "".join(f"# {line}\n" for line in header or [])
    text = comments + yaml.dump(payload, Dumper=_Dumper, sort_keys=False)
    write_atomically(Path(path), lambda tmp: tmp.write_text(text))


class _Dumper(yaml.SafeDumper):
    """Block mappings, lists on one line (`hidden: [128, 64]`)."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True))


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write` on a temporary file beside `path`, fsync it and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
