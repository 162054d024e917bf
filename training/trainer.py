"""Fitting an embedding model with Lightning: the trainer and its callbacks (checkpoints, early stopping, weight
averaging, the validation curve), and `train_embeddings`, which the jobs call."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, EMAWeightAveraging, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger

from graphrec.embed.config import ModelConfig
from graphrec.embed.model import MultiBehaviourGCN
from graphrec.graph.tasks import RecTask
from graphrec.store.versions import fault_point
from training.config import TrainConfig
from training.data import BPRDataModule
from training.logs import progress_bar_wanted
from training.resume import same_run
from training.system import EmbeddingSystem

log = logging.getLogger("graphrec.training")


class EpochLog(Callback):
    """One INFO line per training epoch (loss, seconds) and per validation (the monitored score): what a log
    file gets instead of a progress bar."""

    def __init__(self, max_epochs: int, monitor: str) -> None:
        self.max_epochs, self.monitor = max_epochs, monitor
        self.started = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()
        fault_point(f"epoch_{trainer.current_epoch + 1}_start")  # the epochs before are checkpointed

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        parts = [f"epoch {trainer.current_epoch + 1}/{self.max_epochs}"]
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None and (trainer.current_epoch + 1) % trainer.check_val_every_n_epoch == 0:
            parts.append(f"{self.monitor} {float(score):.4f}")
        parts.append(f"{time.perf_counter() - self.started:.1f}s")
        log.info(", ".join(parts))


class ValidationCurve(Callback):
    """Records the monitored validation score after each validation, so a run's summary shows how it got there."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.scores: dict[int, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None and not trainer.sanity_checking:
            self.scores[int(trainer.current_epoch)] = round(float(score), 6)


def build_model(
    task: RecTask,
    model_config: ModelConfig,
    seed: int = 0,
    init: dict[str, tuple[torch.Tensor | None, torch.Tensor]] | None = None,
) -> MultiBehaviourGCN:
    """A fresh model for `task`: seeded, from the spectral start if configured, with `init` copied over it.

    `init` maps a parameter name to (rows, values): those rows of the parameter are overwritten (rows None: all of
    it), e.g. the id embeddings of users and items a previous model already knew.
    """
    L.seed_everything(seed, workers=True, verbose=False)
    # The trained parameters are the seed's second draw (the Lightning system used to rebuild the model it was
    # given): kept so that every recorded result (benchmarks/results) reproduces exactly from its seed.
    for _ in range(2):
        model = MultiBehaviourGCN(
            task.num_users,
            task.num_items,
            task.behaviours,
            task.target,
            model_config,
            task.feature_sizes(),
            task.vector_sizes(),
        )
    if model_config.init == "spectral":
        model.spectral_init(task.edges, seed)
    if init:
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, (rows, values) in init.items():
                if rows is None:
                    parameters[name].copy_(values)
                else:
                    parameters[name][rows] = values
    return model


def build_trainer(
    train_config: TrainConfig,
    out_dir: Path,
    validate: bool,
    progress: bool = True,
    callbacks: list[Callback] | None = None,
) -> tuple[L.Trainer, ModelCheckpoint | None, ValidationCurve]:
    """The Lightning Trainer of one fit, with its best-checkpoint callback (None without validation) and curve.
    `callbacks` are added to its own (for example an Optuna pruning callback on the monitored score)."""
    monitor = f"val_ndcg@{train_config.k}"
    checkpoints = out_dir / "checkpoints"
    # last.ckpt after every epoch, whatever the validation schedule, so a kill loses at most the epoch in progress
    # (Lightning writes it to a temporary file and renames it into place).
    latest = ModelCheckpoint(
        dirpath=checkpoints, filename="last", save_on_train_epoch_end=True, enable_version_counter=False
    )
    curve = ValidationCurve(monitor)
    callbacks = [latest, curve, *(callbacks or [])]
    # A progress bar on a terminal; one log line per epoch anywhere else (a scheduler's log gets no redraws).
    bar = progress and progress_bar_wanted()
    if progress and not bar:
        callbacks.append(EpochLog(train_config.epochs, monitor))
    if train_config.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=train_config.ema_decay))
    checkpoint = None
    if validate:
        checkpoint = ModelCheckpoint(dirpath=checkpoints, monitor=monitor, mode="max", save_top_k=1, filename="best")
        callbacks += [checkpoint, EarlyStopping(monitor=monitor, mode="max", patience=train_config.patience)]
    budget = train_config.time_budget_minutes
    trainer = L.Trainer(
        max_epochs=train_config.epochs,
        # Lightning's Timer: checked after every step, saved in checkpoints, so a resumed fit keeps its budget.
        max_time=None if budget is None else timedelta(minutes=budget),
        accelerator=train_config.accelerator,
        devices=train_config.devices,
        strategy=train_config.strategy,
        callbacks=callbacks,
        # A new version_N folder per fit, so resuming after a kill keeps the interrupted run's logs.
        logger=CSVLogger(out_dir, name="logs"),
        # Metrics are logged per epoch; the per-step logging interval only produced a warning on small epochs.
        log_every_n_steps=1,
        check_val_every_n_epoch=train_config.eval_every,
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1,
        enable_progress_bar=bar,
        enable_model_summary=False,
        deterministic=True,
        limit_val_batches=1.0 if validate else 0,
        use_distributed_sampler=True,
    )
    return trainer, checkpoint, curve


def train_embeddings(
    task: RecTask,
    val_task: RecTask | None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    out_dir: str | Path = "artifacts/train",
    resume: bool = True,
    progress: bool = True,
    init: dict[str, tuple[torch.Tensor | None, torch.Tensor]] | None = None,
    callbacks: list[Callback] | None = None,
) -> tuple[MultiBehaviourGCN, dict]:
    """Train with Lightning into `out_dir` (checkpoints, CSV logs) and return the best model and a summary.

    With a validation task, early stopping and the best checkpoint follow val ndcg@k; without one, the last
    epoch is kept. With `resume`, a `last.ckpt` in `out_dir` of this very run is continued (e.g. after a kill).
    `init` warm-starts parameters (see `build_model`); `callbacks` are added to the Trainer's.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    out_dir = Path(out_dir)
    model = build_model(task, model_config, train_config.seed, init)
    system = EmbeddingSystem(model, train_config)
    system.attach(task, val_task)
    trainer, checkpoint, curve = build_trainer(train_config, out_dir, val_task is not None, progress, callbacks)
    last = out_dir / "checkpoints" / "last.ckpt"
    same = same_run(out_dir, model.hyperparameters(), train_config, task, init)
    resume_from = str(last) if resume and same else None
    if resume_from:
        log.info("resuming the killed training run from %s", last)
    trainer.fit(system, datamodule=BPRDataModule(task, train_config), ckpt_path=resume_from)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        system.load_state_dict(state)
    best_epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"] if best else trainer.current_epoch - 1
    summary = {
        "epochs_run": trainer.current_epoch,
        # Paths relative to `out_dir`, so summaries copied into reports name no machine's directories.
        "best_checkpoint": str(Path(best).resolve().relative_to(out_dir.resolve())) if best else None,
        "best_epoch": int(best_epoch),
        "best_score": (
            float(checkpoint.best_model_score)
            if checkpoint is not None and checkpoint.best_model_score is not None
            else None
        ),
        "monitor": curve.monitor,
        # Epoch -> score for the epochs validated in this fit (after a resume, those since the resume).
        "val_curve": curve.scores,
        "log_dir": "logs",
        "history": history_decision(system, int(best_epoch), best is not None),
        "stopped_by_time_budget": _out_of_time(trainer),
        # The neighbourhood sizes each step sampled (None: every step propagated the whole graph).
        "fanouts": system.fanouts,
    }
    if summary["stopped_by_time_budget"]:
        log.warning(
            "training stopped by its time budget (embeddings.train.time_budget_minutes %s) after %d of %d epochs",
            train_config.time_budget_minutes,
            trainer.current_epoch,
            train_config.epochs,
        )
    return system.model, summary


def _out_of_time(trainer: L.Trainer) -> bool:
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    return bool(timer is not None and timer.time_remaining() is not None and timer.time_remaining() <= 0)


def history_decision(system: EmbeddingSystem, best_epoch: int, validated: bool) -> dict | None:
    """How the run ranks with the model's history term: the scale of the term against the dot products that gave
    the best validation NDCG@k at the best epoch (0: dropped, the dot product alone; 1: as trained), with the
    score at every scale tried. None for a model without the term or a run without validation; after a resume
    that lost the best epoch's check, the trained scale is kept and the record says so."""
    if not system.model.history_behaviours or not validated:
        return None
    check = system.history_checks.get(best_epoch)
    if check is None:
        return {"kept": True, "scale": 1.0, "reason": "the best epoch's check was made before a resume"}
    scale, by_scale = float(check["scale"]), check["by_scale"]
    return {
        "kept": scale > 0,
        "scale": scale,
        "with_history": round(by_scale[1.0], 5),
        "dot_only": round(by_scale[0.0], 5),
        "epoch": best_epoch,
        "by_scale": {f"{s:g}": round(v, 5) for s, v in sorted(by_scale.items())},
    }
