"""The Lightning system that trains the homepage ranker: a thin wrapper owning the position-aware click loss.

The model is a plain `graphrec.rank.model.HomepageRanker` handed in by the caller; serving never sees this class.
"""

from __future__ import annotations

import gc
import logging
import warnings
from dataclasses import asdict

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from graphrec.rank.model import HomepageRanker
from graphrec.rank.rows import RowVectors
from graphrec.store.versions import fault_point
from training.config import RankTrainConfig

log = logging.getLogger("graphrec.rank")


class RankerSystem(L.LightningModule):
    """Trains P(click) = P(seen | slot, device) x P(click | seen) on logged impressions."""

    def __init__(self, model: HomepageRanker, train_config: RankTrainConfig) -> None:
        super().__init__()
        self.save_hyperparameters({"train": asdict(train_config)})
        self.model = model
        self.train_config = train_config

    def _loss(self, batch) -> torch.Tensor:
        dense, user, module, slot, device, clicked = batch
        embeddings = (user, module) if self.model.embedding_dim else (None, None)
        relevance = self.model(dense, *embeddings)
        return self.model.click_loss(relevance, self.model.seen_logit(slot, device), clicked)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch), on_step=False, on_epoch=True, batch_size=len(batch[0]))

    def configure_optimizers(self):
        cfg = self.train_config
        return torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _shared(array: np.ndarray) -> torch.Tensor:
    """A tensor on `array`'s memory. Arrays polars hands out are read-only; these tensors are only read, so torch's
    warning about writing to them is silenced rather than each array copied."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


class _Rows(Dataset):
    """The ranker's inputs as tensors, fetched a whole batch at a time (`indices`: a list of row numbers); the dense
    features (`RowColumns` or an array) and the embeddings are gathered per batch rather than held per row, and
    the indices (slot, device, vector rows) are held as narrow as they come and widened per batch."""

    def __init__(self, arrays: dict, dim: int) -> None:
        self.dense = arrays["dense"]
        self.slot, self.device = _shared(arrays["slot"]), _shared(arrays["device"])
        self.clicked = _shared(arrays["clicked"])
        self.embeddings = None
        if dim and arrays.get("user") is not None:
            user, module = arrays["user"], arrays["module"]
            self.embeddings = [
                (_shared(np.asarray(side.table)), _shared(np.asarray(side.rows)))
                if isinstance(side, RowVectors)
                else (_shared(np.asarray(side, dtype=np.float32)), None)
                for side in (user, module)
            ]
        self.width = max(dim, 1)

    def __len__(self) -> int:
        return len(self.clicked)

    def __getitem__(self, indices):
        # A batch's rows in storage order: the loss is a mean over them, and gathering 50 feature columns of 15M rows
        # at ascending positions takes a third of the time of random ones (2.3 against 6.7 ms a batch of 4,096).
        index = torch.as_tensor(np.sort(np.asarray(indices)))
        dense = torch.from_numpy(np.ascontiguousarray(self.dense[index.numpy()], dtype=np.float32))
        if self.embeddings is None:
            user = module = torch.zeros(len(index), self.width)
        else:
            user, module = (
                table[index] if rows is None else table[rows[index].long()] for table, rows in self.embeddings
            )
        return dense, user, module, self.slot[index].long(), self.device[index].long(), self.clicked[index]


def fit_ranker(
    model: HomepageRanker,
    train: dict,
    validation: dict | None,
    train_config: RankTrainConfig,
    out_dir,
    callbacks: list | None = None,
    warm: bool = False,
) -> tuple[HomepageRanker, dict]:
    """Fit `model` on the `train` arrays (from `RankRows.arrays`), early-stopping on the `validation` loss; returns
    the model with its best weights and a summary (epochs run, best epoch, best validation loss, the loss curve).
    `callbacks` are added to the Trainer's (for example an Optuna pruning callback on `val_loss`). `warm`: `model`
    is trained already and goes on from its weights, input transform and position tower (none refitted)."""
    L.seed_everything(train_config.seed, workers=True, verbose=False)
    if not warm:
        model.fit_dense_transform(train["dense"])
    dim = model.embedding_dim
    generator = torch.Generator().manual_seed(train_config.seed)
    # Whole batches are gathered with one index each (a per-row fetch costs more than the step itself).
    train_set = _Rows(train, dim)
    batches = BatchSampler(RandomSampler(train_set, generator=generator), train_config.batch_size, drop_last=False)
    train_loader = DataLoader(train_set, sampler=batches, batch_size=None)
    val_loader = None
    if validation:
        val_set = _Rows(validation, dim)
        val_batches = BatchSampler(SequentialSampler(val_set), 8 * train_config.batch_size, drop_last=False)
        val_loader = DataLoader(val_set, sampler=val_batches, batch_size=None)
    if model.config.position_tower and not warm:
        initialise_position_tower(model, train)
    system = RankerSystem(model, train_config)
    curve = _LossCurve()
    callbacks = [curve, *(callbacks or [])]
    if train_config.average_epochs > 0:
        callbacks.append(_averaging(len(batches), train_config.average_epochs))
    checkpoint = None
    if val_loader is not None:
        checkpoint = ModelCheckpoint(dirpath=out_dir, monitor="val_loss", mode="min", save_top_k=1, filename="best")
        callbacks += [checkpoint, EarlyStopping(monitor="val_loss", mode="min", patience=train_config.patience)]
    trainer = L.Trainer(
        max_epochs=train_config.epochs,
        accelerator="cpu",
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpoint is not None,
        deterministic=True,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if val_loader is not None else 0,
    )
    trainer.fit(system, train_loader, val_loader)
    if checkpoint is not None and checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        system.load_state_dict(state)
        log.debug("best validation loss %.5f", float(checkpoint.best_model_score))
    summary = {"epochs_run": len(curve.train_loss), "train_loss": curve.train_loss, "val_loss": curve.val_loss}
    if curve.val_loss:
        best = int(np.argmin(curve.val_loss))
        summary.update(best_epoch=best + 1, best_val_loss=curve.val_loss[best])
    model = system.model.eval()
    # The trainer's reference cycles hold the loaders, and through them the rows' input arrays, until a collection:
    # collected here, before the caller gathers the next rows.
    del trainer, system, train_loader, val_loader, train_set
    gc.collect()
    return model, summary


def _averaging(steps_per_epoch: int, epochs: float) -> EMAWeightAveraging:
    """Lightning's exponential moving average of the weights over about `epochs` epochs of steps: validation, the
    checkpoints and the returned model read the average. At a constant learning rate the last step's weights
    carry that step's noise; the validation loss of a 10M-event shop's ranker jumped by up to 5% between
    epochs, so which epoch early stopping kept, and how many it ran, varied from run to run."""
    horizon = max(steps_per_epoch * epochs, 1.0)
    return EMAWeightAveraging(decay=1.0 - 1.0 / horizon, use_buffers=False)  # buffers: the fixed input transform


class _LossCurve(L.Callback):
    """Records the epoch losses (for the artifact, the run report and the final fit's epoch count)."""

    def __init__(self) -> None:
        self.train_loss: list[float] = []
        self.val_loss: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if "train_loss" in trainer.callback_metrics:
            self.train_loss.append(float(trainer.callback_metrics["train_loss"]))
            log.info("ranker epoch %d: train loss %.5f", len(self.train_loss), self.train_loss[-1])
            fault_point(f"ranker_epoch_{len(self.train_loss)}")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val_loss" in trainer.callback_metrics:
            self.val_loss.append(float(trainer.callback_metrics["val_loss"]))


@torch.no_grad()
def initialise_position_tower(model: HomepageRanker, train: dict, prior: float = 200.0) -> None:
    """Start P(seen | slot, device) at each slot's click rate relative to the device's best slot (smoothed towards
    the device's mean with `prior` impressions): the position curve the logs show, which training then refines."""
    slots = np.minimum(train["slot"], model.num_slots - 1)
    for device in range(model.num_devices):
        mine = train["device"] == device
        if not mine.any():
            continue
        clicks = np.bincount(slots[mine], weights=train["clicked"][mine], minlength=model.num_slots)
        shown = np.bincount(slots[mine], minlength=model.num_slots)
        mean = clicks.sum() / shown.sum()
        ctr = (clicks + prior * mean) / (shown + prior)
        ratio = np.clip(ctr / ctr.max(), 1e-3, 0.999)
        model.slot_logit.weight[:, device] = torch.from_numpy(np.log(ratio / (1 - ratio))).float()
    model.device_logit.weight.zero_()


@torch.no_grad()
def predict(model: HomepageRanker, arrays: dict, batch_size: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """P(click | seen) (the serving score) and P(click) at the logged slot, per row."""
    model.eval()
    dim = model.embedding_dim
    rows = _Rows(arrays, dim)
    relevance, click = torch.empty(len(rows)), torch.empty(len(rows))  # written batch by batch: no list, no concat
    loader = DataLoader(rows, sampler=BatchSampler(SequentialSampler(rows), batch_size, False), batch_size=None)
    start = 0
    for dense, user, module, slot, device, _ in loader:
        logit = model(dense, user, module) if dim else model(dense)
        log_click, _ = model.click_log_probability(logit, model.seen_logit(slot, device))
        end = start + len(logit)
        torch.sigmoid(logit, out=relevance[start:end])
        torch.exp(log_click, out=click[start:end])
        start = end
    return relevance.numpy(), click.numpy()
