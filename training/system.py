"""Lightning training of embedding models: a thin system around `MultiBehaviourGCN` and a BPR data module.

Full-graph sparse propagation on every step (pyg-lib's neighbour samplers are not needed at this scale and are
not available on every machine). Negatives are drawn uniformly from the catalogue, rejecting the user's training
positives of that behaviour; the sampler is built from the training task alone, so it never sees a validation or
test pair. Each epoch draws new samples from a generator seeded by (seed, epoch), so a run resumed from a
checkpoint continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, EMAWeightAveraging, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from graphrec.artifacts import write_json_atomic
from graphrec.metrics import evaluate_ranking, expand_rows
from graphrec.models import ModelConfig, MultiBehaviourGCN, PairLookup, deepcopy_sharing
from graphrec.sampling import NeighbourSampler
from graphrec.tasks import RecTask

log = logging.getLogger("graphrec.training")


@dataclass
class TrainConfig:
    """Optimisation settings.

    Args:
        epochs: maximum epochs.
        batch_size: BPR triples per step.
        lr: Adam learning rate.
        l2: L2 penalty on the layer-0 vectors of each batch (LightGCN's regulariser).
        aux_weight: loss weight of auxiliary-behaviour triples relative to target-behaviour ones.
        aux_ratio: auxiliary triples per target triple in an epoch.
        loss: `bpr` (pairwise) or `softmax`: a sampled softmax over the batch's positives and negatives (each
            user's positive against the other 2B - 1 candidates, corrected by their sampling frequency), which
            gives every positive thousands of negatives per step. Either way, models with a history term add the
            BPR loss of (detached dot product + history term) on the target triples, which trains the history
            weights only.
        logits_dtype: `float32` or `bfloat16`: the precision of the sampled-softmax logits matmul (forward and
            backward), the bulk of a softmax step. bfloat16 makes it about 3x faster on CPUs with AVX512-BF16 or AMX
            (and on GPUs); inputs are rounded to bfloat16, the log q correction and the loss stay in float32.
        fanouts: None (default): every step propagates the whole graph, exact and fast up to a few million
            edges. A list, one entry per layer: every step propagates only the batch's sampled neighbourhood,
            keeping up to that many neighbours per node and hop (-1: all; see `graphrec.sampling`), so a step's
            cost and memory follow the batch, not the graph. Validation and export still propagate the whole
            graph once, without gradients.
        history_negatives: share of target triples whose negative is drawn from the user's own auxiliary-behaviour
            items without the target behaviour (viewed or carted, not bought): these teach the history term the
            ranking within a user's history, where most future purchases are; the embeddings' own BPR loss skips
            them.
        history_lr_scale: learning rate of the history term's weights relative to `lr`.
        min_batches: an epoch has at least this many batches (smaller ones where the data is small), so a small
            shop still gets optimiser steps: with 8192 triples a batch, 5,000 purchases were one step an epoch.
        ema_decay: None (default) or a decay in (0, 1): keep an exponential moving average of the parameters,
            updated after every optimiser step (Lightning's `EMAWeightAveraging`); validation, checkpoints, early
            stopping and the returned model all use the average, the optimiser keeps stepping the raw weights. 0.99
            averages over roughly the last 100 steps. It costs one more copy of the parameters (the copy shares the
            graph) and a pass over them per step.
        eval_every: validate every this many epochs.
        patience: stop after this many validations without improvement of val ndcg@k.
        k: cut-off of the monitored metric.
        seed: seeds parameters and sampling.
        accelerator / devices / strategy: passed to the Lightning Trainer (`strategy="ddp"` for several processes).
    """

    epochs: int = 60
    batch_size: int = 4096
    lr: float = 0.005
    l2: float = 1e-4
    aux_weight: float = 0.3
    aux_ratio: float = 1.0
    history_negatives: float = 0.5
    history_lr_scale: float = 10.0
    min_batches: int = 20
    loss: str = "bpr"
    logits_dtype: str = "float32"
    fanouts: list[int] | None = None
    ema_decay: float | None = None
    eval_every: int = 5
    patience: int = 4
    k: int = 20
    seed: int = 0
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"

    def __post_init__(self) -> None:
        if self.loss not in ("bpr", "softmax"):
            raise ValueError(f"train.loss must be bpr or softmax, not {self.loss!r}")
        if self.logits_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"train.logits_dtype must be float32 or bfloat16, not {self.logits_dtype!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be between 0 and 1 (exclusive) or null, not {self.ema_decay!r}")


class NegativeSampler:
    """What negative sampling needs from a training task, built once and reused every epoch: a lookup of every
    training pair, one of the target pairs, and per user (CSR) the auxiliary-behaviour items without a target edge."""

    def __init__(self, task: RecTask, target: str) -> None:
        self.num_items = task.num_items
        users = torch.cat([e[0] for e in task.edges.values()])
        items = torch.cat([e[1] for e in task.edges.values()])
        self.known = PairLookup(users, items, torch.ones(len(users)), task.num_items)
        target_users, target_items, _ = task.edges[target]
        self.target = PairLookup(target_users, target_items, torch.ones(len(target_users)), task.num_items)
        aux = [e for b, e in task.edges.items() if b != target]
        keys = torch.zeros(0, dtype=torch.long)
        if aux:
            keys = torch.unique(torch.cat([e[0] * task.num_items + e[1] for e in aux]))
            keys = keys[~torch.isin(keys, target_users * task.num_items + target_items)]
        self.history_items = keys % task.num_items
        self.history_indptr = torch.zeros(task.num_users + 1, dtype=torch.long)
        self.history_indptr[1:] = torch.cumsum(torch.bincount(keys // task.num_items, minlength=task.num_users), 0)

    def uniform(self, users: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform negatives, resampled where they hit a training pair; returns them and the remaining clashes."""
        negatives = torch.randint(0, self.num_items, (len(users),), generator=generator)
        clash = self.known(users, negatives) > 0
        for _ in range(100):
            if not clash.any():
                break
            negatives[clash] = torch.randint(0, self.num_items, (int(clash.sum()),), generator=generator)
            clash = self.known(users, negatives) > 0
        return negatives, clash

    def history(self, users: torch.Tensor, fallback: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """For each user, a random item of its auxiliary behaviours that it has no target edge with (else fallback)."""
        starts = self.history_indptr[users]
        counts = self.history_indptr[users + 1] - starts
        pick = starts + (torch.rand(len(users), generator=generator) * counts).long()
        if len(self.history_items) == 0:
            return fallback
        chosen = self.history_items[pick.clamp(max=len(self.history_items) - 1)]
        return torch.where(counts > 0, chosen, fallback)


class BPRTriples(Dataset):
    """One epoch of (user, positive, negative, is_target, from_history) triples, pre-cut into batches (one item =
    one batch); `from_history` marks negatives drawn from the user's own auxiliary items."""

    def __init__(
        self, task: RecTask, target: str, config: TrainConfig, epoch: int, sampler: NegativeSampler | None = None
    ) -> None:
        sampler = sampler or NegativeSampler(task, target)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        users, items, flags = [], [], []
        target_users, target_items, _ = task.edges[target]
        users.append(target_users)
        items.append(target_items)
        flags.append(torch.ones(len(target_users), dtype=torch.bool))
        aux = [b for b in task.behaviours if b != target]
        if aux and config.aux_ratio > 0:
            aux_users = torch.cat([task.edges[b][0] for b in aux])
            aux_items = torch.cat([task.edges[b][1] for b in aux])
            count = min(len(aux_users), int(config.aux_ratio * len(target_users)))
            pick = torch.randperm(len(aux_users), generator=generator)[:count]
            users.append(aux_users[pick])
            items.append(aux_items[pick])
            flags.append(torch.zeros(count, dtype=torch.bool))
        users, items, flags = torch.cat(users), torch.cat(items), torch.cat(flags)
        negatives, clash = sampler.uniform(users, generator)
        swap = torch.zeros(len(users), dtype=torch.bool)
        if config.history_negatives > 0 and aux:
            swap = flags & (torch.rand(len(users), generator=generator) < config.history_negatives)
            drawn = sampler.history(users, negatives, generator)
            swap &= drawn != negatives  # users without such items keep their uniform negative
            negatives = torch.where(swap, drawn, negatives)
            clash = sampler.known(users, negatives) > 0
            clash &= ~(swap & (sampler.target(users, negatives) == 0))
        # A user who touched almost the whole catalogue may keep a clash; such triples are left out and counted.
        self.dropped = int(clash.sum())
        users, items, negatives, flags, swap = (t[~clash] for t in (users, items, negatives, flags, swap))
        order = torch.randperm(len(users), generator=generator)
        size = min(config.batch_size, max(1, math.ceil(len(users) / config.min_batches)))
        self.batches = [
            tuple(t[order[i : i + size]] for t in (users, items, negatives, flags, swap))
            for i in range(0, len(users), size)
        ]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        return self.batches[index]


class BPRDataModule(L.LightningDataModule):
    """Training triples resampled every epoch; a one-item validation loader that triggers full-catalogue eval."""

    def __init__(self, task: RecTask, config: TrainConfig) -> None:
        super().__init__()
        self.task, self.config = task, config
        self.sampler = NegativeSampler(task, task.target)

    def train_dataloader(self) -> DataLoader:
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        triples = BPRTriples(self.task, self.task.target, self.config, epoch, self.sampler)
        return DataLoader(triples, batch_size=None, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader([torch.zeros(1)], batch_size=None)


class EmbeddingSystem(L.LightningModule):
    """The Lightning wrapper: BPR loss over the model's scores, validation by full-catalogue ranking."""

    def __init__(self, model_hparams: dict, train_config: dict) -> None:
        super().__init__()
        self.save_hyperparameters()
        hp = dict(model_hparams)
        hp["config"] = ModelConfig(**hp["config"])
        self.model = MultiBehaviourGCN(**hp)
        self.train_config = TrainConfig(**train_config)
        self.val_task: RecTask | None = None
        self.sampler: NeighbourSampler | None = None
        if self.train_config.fanouts is not None and len(self.train_config.fanouts) != self.model.config.num_layers:
            raise ValueError(
                f"train.fanouts needs one entry per layer ({self.model.config.num_layers}), "
                f"not {self.train_config.fanouts!r}"
            )

    def __deepcopy__(self, memo: dict) -> EmbeddingSystem:
        # The copy that weight averaging keeps shares the validation task, the sampler and the log q table.
        return deepcopy_sharing(self, memo, ("val_task", "sampler", "_log_q"))

    def attach(self, task: RecTask, val_task: RecTask | None) -> None:
        """Give the model its training graph and the task it is validated on."""
        self.model.set_graph(task.edges, task.item_features)
        self.val_task = val_task
        fanouts = self.train_config.fanouts
        self.sampler = (
            None
            if fanouts is None
            else NeighbourSampler(task.edges, self.model.behaviours, task.num_users, task.num_items, fanouts)
        )
        # Sampling probability of each item as a softmax candidate: half the batch are positives (by frequency
        # among the training triples, approximated by target + auxiliary popularity), half uniform negatives.
        popularity = task.popularity()
        self._log_q = torch.log(0.5 * popularity / popularity.sum().clamp(min=1) + 0.5 / task.num_items)

    def _batch_vectors(self, users, positives, negatives, batch_idx):
        """Embeddings of the batch's users, positives and negatives: from propagating the whole graph, or with
        `train.fanouts` from propagating the batch's sampled neighbourhood."""
        if self.sampler is None:
            user_vectors, item_vectors, _ = self.model.propagate()
            return user_vectors[users], item_vectors[positives], item_vectors[negatives]
        # Seeded by (seed, epoch, batch, rank): a resumed run draws the same neighbourhoods.
        key = (self.train_config.seed, self.current_epoch, batch_idx, self.global_rank)
        generator = torch.Generator().manual_seed(hash(key) % 2**63)
        subgraph = self.sampler.sample(users, torch.cat([positives, negatives]), generator)
        user_vectors, item_vectors = self.model.propagate_subgraph(subgraph)
        return (
            user_vectors[subgraph.user_index(users)],
            item_vectors[subgraph.item_index(positives)],
            item_vectors[subgraph.item_index(negatives)],
        )

    def training_step(self, batch, batch_idx):
        users, positives, negatives, is_target, from_history = batch
        u, positive_vectors, negative_vectors = self._batch_vectors(users, positives, negatives, batch_idx)
        weight = torch.where(is_target, 1.0, self.train_config.aux_weight)
        margin = (u * (positive_vectors - negative_vectors)).sum(-1)
        if self.train_config.loss == "softmax":
            candidate_vectors = torch.cat([positive_vectors, negative_vectors])
            loss = self._softmax_loss(u, candidate_vectors, positives, negatives, weight, from_history)
        elif self.model.history_behaviours:
            # The embeddings learn from uniform negatives alone: whether a viewed item is bought is the history
            # term's job, and teaching it to the dot product left the embeddings weak on their own.
            uniform = weight * ~from_history
            loss = (F.softplus(-margin) * uniform).sum() / uniform.sum().clamp(min=1e-6)
        else:
            loss = (F.softplus(-margin) * weight).sum() / weight.sum()
        if self.model.history_behaviours:
            # The history term learns on top of the embeddings (detached), on every target triple.
            # A target triple's negative is never the user's own purchase, so only positives need leaving out.
            positive_history = self.model.history_scores(users, positives, leave_own_out=True)
            history = positive_history - self.model.history_scores(users, negatives)
            combined = F.softplus(-(margin.detach() + history))
            loss = loss + (combined * is_target).sum() / is_target.sum().clamp(min=1)
        l2 = (
            self.model.user_embedding.weight[users].square().sum()
            + self.model.item_inputs(positives).square().sum()
            + self.model.item_inputs(negatives).square().sum()
        ) / len(users)
        total = loss + self.train_config.l2 * l2
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(users))
        return total

    def _softmax_loss(self, u, candidate_vectors, positives, negatives, weight, from_history):
        """Cross-entropy of each row's positive among the batch's positives and uniform negatives. In-batch
        positives are drawn in proportion to popularity and negatives uniformly, so logits are corrected by log q
        (Yi et al., RecSys 2019); another row's copy of the row's own positive is masked, not counted as a
        negative, and so are history negatives (they train the history term only, as with BPR)."""
        candidates = torch.cat([positives, negatives])
        bias = -self._log_q[candidates]
        bias[len(positives) :][from_history] = -torch.inf
        if self.train_config.logits_dtype == "bfloat16":
            # The bias stays in float32: log q near -15 would be rounded by up to 0.06 in bfloat16.
            logits = (u.bfloat16() @ candidate_vectors.bfloat16().T).float() + bias  # [B, 2B]
        else:
            logits = torch.addmm(bias, u, candidate_vectors.T)
        # The copies of a row's positive among the candidates, found by sorting (few: popular items repeat) rather
        # than with a dense [B, 2B] comparison, which cost as much as the logits themselves.
        ordered, order = torch.sort(candidates)
        rows, index = expand_rows(
            torch.searchsorted(ordered, positives), torch.searchsorted(ordered, positives, right=True)
        )
        columns = order[index]
        own = columns == rows
        logits = logits.index_put((rows[~own], columns[~own]), torch.tensor(-torch.inf))
        target = torch.arange(len(positives))
        return (F.cross_entropy(logits, target, reduction="none") * weight).sum() / weight.sum()

    def validation_step(self, batch, batch_idx):
        if self.val_task is None:
            return
        metrics = evaluate_model(self.model, self.val_task, ks=(self.train_config.k,))
        for name, value in metrics.items():
            if "@" in name:
                self.log(f"val_{name}", value, prog_bar=name.startswith("ndcg"), batch_size=1)

    def configure_optimizers(self):
        # Adam moves every parameter by about lr per step whatever its gradient, so the history term's few weights
        # would crawl to their optimum over hundreds of steps while the embeddings already overfit; they get a
        # larger learning rate. (Not the behaviour mix or feature gate: sped up, they collapsed the embeddings.)
        names = self.model.HISTORY_PARAMETERS
        history = [p for n, p in self.model.named_parameters() if n in names]
        others = [p for n, p in self.model.named_parameters() if n not in names]
        return torch.optim.Adam(
            [
                {"params": others, "lr": self.train_config.lr},
                {"params": history, "lr": self.train_config.lr * self.train_config.history_lr_scale},
            ]
        )


def model_scorer(model: MultiBehaviourGCN, history: bool = True):
    """A scorer `users [B] -> scores [B, num_items]` from one propagation: the dot product, plus the history
    term when `history` (and the model has one)."""
    model.eval()
    with torch.no_grad():
        user_vectors, item_vectors, _ = model.propagate()

    def score(batch: torch.Tensor) -> torch.Tensor:
        scores = user_vectors[batch] @ item_vectors.T
        return scores + model.history_scores(batch) if history and model.history_behaviours else scores

    return score


def evaluate_model(
    model: MultiBehaviourGCN, task: RecTask, ks=(10, 20), history: bool = True, users: torch.Tensor | None = None
) -> dict[str, float]:
    """Rank the full catalogue with the model's scores and average the metrics over the task's truth."""
    result = evaluate_ranking(
        model_scorer(model, history), task.truth, task.exclude, ks, task.popularity(), users=users
    )
    model.train()
    return result


def _task_digest(task: RecTask) -> str:
    digest = hashlib.sha256()
    for behaviour in sorted(task.edges):
        for tensor in task.edges[behaviour]:
            digest.update(behaviour.encode())
            digest.update(tensor.numpy().tobytes())
    for name in sorted(task.item_features):
        digest.update(task.item_features[name].numpy().tobytes())
    return digest.hexdigest()


def _init_digest(init) -> str | None:
    if not init:
        return None
    digest = hashlib.sha256()
    for name in sorted(init):
        rows, values = init[name]
        digest.update(name.encode())
        if rows is not None:
            digest.update(rows.numpy().tobytes())
        digest.update(values.detach().numpy().tobytes())
    return digest.hexdigest()


def _same_run(out_dir: Path, hyperparameters: dict, train_config: TrainConfig, task: RecTask, init=None) -> bool:
    """True when `out_dir` holds a checkpoint of this very run (same model, settings and data), so a killed run
    resumes; checkpoints of a different run are moved aside (kept as `checkpoints.stale-*`) and training starts
    fresh instead of continuing someone else's state."""
    key = {
        "hyperparameters": hyperparameters,
        # More epochs continue a run; the hardware it runs on does not change it.
        "train": {
            k: v for k, v in asdict(train_config).items() if k not in ("epochs", "devices", "strategy", "accelerator")
        },
        "data": _task_digest(task),
        "init": _init_digest(init),
    }
    marker = out_dir / "run_key.json"
    checkpoints = out_dir / "checkpoints"
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    same = marker.exists() and json.loads(marker.read_text()) == json.loads(json.dumps(key, default=str))
    if (checkpoints / "last.ckpt").exists() and same:
        epoch = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["epoch"]
        if epoch < train_config.epochs:
            return True
    if rank == 0:
        if checkpoints.exists():
            stale = out_dir / f"checkpoints.stale-{int(time.time())}"
            os.rename(checkpoints, stale)
            log.info("%s holds checkpoints of a different run; moved to %s, training from scratch", out_dir, stale)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, key)
    return False


class ValidationCurve(Callback):
    """Records the monitored validation score after each validation, so a run's summary shows how it got there."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.scores: dict[int, float] = {}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None and not trainer.sanity_checking:
            self.scores[int(trainer.current_epoch)] = round(float(score), 6)


def train_embeddings(
    task: RecTask,
    val_task: RecTask | None,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    out_dir: str | Path = "artifacts/train",
    resume: bool = True,
    progress: bool = True,
    init: dict[str, tuple[torch.Tensor | None, torch.Tensor]] | None = None,
) -> tuple[MultiBehaviourGCN, dict]:
    """Train with Lightning into `out_dir` (checkpoints, CSV logs) and return the best model and a summary.

    With a validation task, early stopping and the best checkpoint follow val ndcg@k; without one, the last
    epoch is kept. With `resume`, a `last.ckpt` in `out_dir` is continued (e.g. after a kill). `init` warm-starts
    parameters: name -> (rows, values) overwrites those rows of the freshly initialised parameter (rows None: all
    of it), e.g. the id embeddings of users and items a previous model already knew.
    """
    model_config = model_config or ModelConfig()
    train_config = train_config or TrainConfig()
    out_dir = Path(out_dir)
    L.seed_everything(train_config.seed, workers=True, verbose=False)
    model = MultiBehaviourGCN(
        task.num_users, task.num_items, task.behaviours, task.target, model_config, task.feature_sizes()
    )
    system = EmbeddingSystem(model.hyperparameters(), asdict(train_config))
    if model_config.init == "spectral":
        system.model.spectral_init(task.edges, train_config.seed)
    if init:
        parameters = dict(system.model.named_parameters())
        with torch.no_grad():
            for name, (rows, values) in init.items():
                if rows is None:
                    parameters[name].copy_(values)
                else:
                    parameters[name][rows] = values
    system.attach(task, val_task)
    monitor = f"val_ndcg@{train_config.k}"
    checkpoints = out_dir / "checkpoints"
    # last.ckpt after every epoch, whatever the validation schedule, so a kill loses at most the epoch in progress
    # (Lightning writes it to a temporary file and renames it into place).
    latest = ModelCheckpoint(
        dirpath=checkpoints, filename="last", save_on_train_epoch_end=True, enable_version_counter=False
    )
    curve = ValidationCurve(monitor)
    callbacks = [latest, curve]
    if train_config.ema_decay is not None:
        callbacks.append(EMAWeightAveraging(decay=train_config.ema_decay))
    checkpoint = None
    if val_task is not None:
        checkpoint = ModelCheckpoint(dirpath=checkpoints, monitor=monitor, mode="max", save_top_k=1, filename="best")
        callbacks += [checkpoint, EarlyStopping(monitor=monitor, mode="max", patience=train_config.patience)]
    trainer = L.Trainer(
        max_epochs=train_config.epochs,
        accelerator=train_config.accelerator,
        devices=train_config.devices,
        strategy=train_config.strategy,
        callbacks=callbacks,
        # A new version_N folder per fit, so resuming after a kill keeps the interrupted run's logs.
        logger=CSVLogger(out_dir, name="logs"),
        check_val_every_n_epoch=train_config.eval_every,
        num_sanity_val_steps=0,
        reload_dataloaders_every_n_epochs=1,
        enable_progress_bar=progress,
        enable_model_summary=False,
        deterministic=True,
        limit_val_batches=1.0 if val_task is not None else 0,
        use_distributed_sampler=True,
    )
    last = checkpoints / "last.ckpt"
    same = _same_run(out_dir, model.hyperparameters(), train_config, task, init)
    resume_from = str(last) if resume and same else None
    trainer.fit(system, datamodule=BPRDataModule(task, train_config), ckpt_path=resume_from)
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    if best:
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        system.load_state_dict(state)
    best_epoch = torch.load(best, map_location="cpu", weights_only=True)["epoch"] if best else trainer.current_epoch - 1
    summary = {
        "epochs_run": trainer.current_epoch,
        "best_checkpoint": best,
        "best_epoch": int(best_epoch),
        "best_score": (
            float(checkpoint.best_model_score)
            if checkpoint is not None and checkpoint.best_model_score is not None
            else None
        ),
        "monitor": monitor,
        # Epoch -> score for the epochs validated in this fit (after a resume, those since the resume).
        "val_curve": curve.scores,
        "log_dir": str(out_dir / "logs"),
    }
    return system.model, summary
