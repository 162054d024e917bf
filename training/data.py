"""Training data for embedding models: negative sampling, one epoch of BPR triples, and the Lightning data module.

Negatives are drawn uniformly from the catalogue, rejecting the user's training positives of that behaviour; the
sampler is built from the training task alone, so it never sees a validation or test pair. Each epoch draws new
samples from a generator seeded by (seed, epoch), so a run resumed from a checkpoint continues exactly as an
uninterrupted one.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from graphrec.embed.model import PairLookup
from graphrec.graph.tasks import RecTask
from training.config import TrainConfig


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
        aux_users = torch.cat([e[0] for e in aux]) if aux else torch.zeros(0, dtype=torch.long)
        aux_items = torch.cat([e[1] for e in aux]) if aux else torch.zeros(0, dtype=torch.long)
        self.auxiliary = PairLookup(aux_users, aux_items, torch.ones(len(aux_users)), task.num_items)
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
            # Only a positive the user had already viewed or carted meets a negative from the same history: that
            # contrast teaches the ranking within the history. A positive from outside it, set against a carted
            # item, would teach that carting makes a purchase less likely (on a shop without views, where most
            # purchases were never carted, the history term then ranked below the dot product alone).
            in_history = sampler.auxiliary(users, items) > 0
            swap = flags & in_history & (torch.rand(len(users), generator=generator) < config.history_negatives)
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
