"""The Lightning system that trains an embedding model: a thin wrapper that owns the loss and validation.

The model is a plain `MultiBehaviourGCN` handed in by the caller (export and serving never see this class). Every
step propagates the whole graph with sparse products, or with `train.fanouts` only the batch's sampled
neighbourhood (pyg-lib's samplers are not needed at this scale and are not available on every machine).
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import lightning as L
import torch
from torch.nn import functional as F

from graphrec.embed.model import MultiBehaviourGCN, deepcopy_sharing
from graphrec.embed.scoring import evaluate_model, history_scale_sweep
from graphrec.graph.sampling import NeighbourSampler
from graphrec.graph.tasks import RecTask
from graphrec.metrics import expand_rows, sample_users
from training.config import TrainConfig

log = logging.getLogger("graphrec.training")


def validation_users(task: RecTask, train_config: TrainConfig) -> torch.Tensor | None:
    """The users a run validates on: every user with truth (None), or a fixed sample of `val_max_users` of them."""
    return sample_users(task.truth, train_config.val_max_users, train_config.seed)


class EmbeddingSystem(L.LightningModule):
    """The Lightning wrapper: BPR loss over the model's scores, validation by full-catalogue ranking."""

    def __init__(self, model: MultiBehaviourGCN, train_config: TrainConfig) -> None:
        super().__init__()
        # Recorded in checkpoints for the record only: a run resumes with `Trainer.fit(ckpt_path=...)` into a system
        # its caller built (load_from_checkpoint is not supported), and models are read from their artifact.
        self.save_hyperparameters({"model": model.hyperparameters(), "train": asdict(train_config)})
        self.model = model
        self.train_config = train_config
        self.val_task: RecTask | None = None
        self.val_users: torch.Tensor | None = None
        self.sampler: NeighbourSampler | None = None
        self.fanouts: list[int] | None = None  # what `train.fanouts` resolved to on the attached graph
        # Epoch -> validation NDCG@k with and without the history term (models that have one): the run keeps the
        # term only where it helps (see `history_decision`).
        self.history_checks: dict[int, dict[str, float]] = {}
        fanouts = train_config.fanouts
        if isinstance(fanouts, list) and len(fanouts) != model.config.num_layers:
            raise ValueError(
                f"train.fanouts needs one entry per layer ({model.config.num_layers}), not {train_config.fanouts!r}"
            )

    def __deepcopy__(self, memo: dict) -> EmbeddingSystem:
        # The copy that weight averaging keeps shares the validation task, the sampler and the log q table.
        return deepcopy_sharing(self, memo, ("val_task", "val_users", "sampler", "_log_q", "history_checks"))

    def attach(self, task: RecTask, val_task: RecTask | None) -> None:
        """Give the model its training graph and the task it is validated on."""
        self.model.set_graph(task.edges, task.item_features)
        self.val_task = val_task
        self.val_users = None if val_task is None else validation_users(val_task, self.train_config)
        edges = sum(len(task.edges[b][0]) for b in self.model.behaviours)
        self.fanouts = self.train_config.resolved_fanouts(self.model.config.num_layers, edges)
        if self.train_config.fanouts == "auto":
            mode = "the whole graph" if self.fanouts is None else f"sampled neighbourhoods {self.fanouts}"
            # Sampling changes what a step sees, so it is announced; the whole graph is the ordinary case.
            log.log(
                logging.DEBUG if self.fanouts is None else logging.INFO,
                "%s training edges: each step propagates %s (train.fanouts auto, sample_above_edges %s)",
                f"{edges:,}",
                mode,
                f"{self.train_config.sample_above_edges:,}",
            )
        self.sampler = (
            None
            if self.fanouts is None
            else NeighbourSampler(task.edges, self.model.behaviours, task.num_users, task.num_items, self.fanouts)
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
        if self.train_config.cold_start_weight > 0 and self.model.has_item_inputs:
            # The items' feature and content part learns to place them as if they had no interactions; the users
            # stay as the main loss trains them.
            cold_weight = weight * ~from_history
            cold = self.model.cold_item_vectors(positives) - self.model.cold_item_vectors(negatives)
            cold_loss = F.softplus(-(u.detach() * cold).sum(-1))
            cold_loss = (cold_loss * cold_weight).sum() / cold_weight.sum().clamp(min=1e-6)
            self.log("train_cold_loss", cold_loss, on_step=False, on_epoch=True, batch_size=len(users))
            loss = loss + self.train_config.cold_start_weight * cold_loss
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
        k = self.train_config.k
        if self.model.history_behaviours:
            # Every scale of the history term against the dot products is ranked, and the monitored score is the
            # best of them, so early stopping follows the ranking the run will keep: training goes on while the
            # dot products improve even where the trained scale has stopped helping (see `history_scales`).
            scales = [0.0, 1.0, *self.train_config.history_scales]  # the sweep sorts and deduplicates
            sweep = history_scale_sweep(self.model, self.val_task, scales, k, users=self.val_users)
            if not sweep[1.0]["users"]:
                return  # no validation user with truth: nothing to log, as without the term
            ndcg = {scale: result[f"ndcg@{k}"] for scale, result in sweep.items()}
            best = max(ndcg, key=lambda scale: (ndcg[scale], scale == 1.0))  # a tie keeps the trained scale
            self.history_checks[int(self.current_epoch)] = {"scale": best, "by_scale": ndcg}
            self.log("val_history_gain", ndcg[best] - ndcg[0.0], batch_size=1)
            self.log("val_history_scale", best, batch_size=1)
            metrics = sweep[best]
        else:
            metrics = evaluate_model(self.model, self.val_task, ks=(k,), users=self.val_users)
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
        # The fused kernel updates every embedding row in one pass: 1.1 against 8.0 ms a step for 2.4M parameters on
        # 2 CPU cores, a cost every step pays whatever the batch, since the propagated tables get dense gradients.
        return torch.optim.Adam(
            [
                {"params": others, "lr": self.train_config.lr},
                {"params": history, "lr": self.train_config.lr * self.train_config.history_lr_scale},
            ],
            fused=self._fused_adam(),
        )

    def _fused_adam(self) -> bool:
        return self.device.type in ("cpu", "cuda")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The history checks travel with the checkpoint, so a resumed run still knows the scale each earlier
        # epoch chose and ranks with the best epoch's one.
        checkpoint["history_checks"] = self.history_checks

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history_checks.update(checkpoint.get("history_checks", {}))
        # Loading an optimiser's state restores its param groups' `fused` flag too: a checkpoint written before the
        # fused step would make the resumed run step unfused (the same values, 7x the time on CPU).
        for state in checkpoint.get("optimizer_states", []):
            for group in state.get("param_groups", []):
                if "fused" in group:
                    group["fused"] = self._fused_adam()
