"""The homepage CTR ranker: a DCN-v2 over behaviour features and frozen graph embeddings, with a position tower.

Relevance comes from a deep & cross network (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network",
https://arxiv.org/abs/2008.13535) over standardised behaviour features, the user's and the module's frozen
embeddings, their dot product and element-wise product. The slot enters only through a separate position tower
(PAL, Guo et al. 2019, "PAL: A Position-bias Aware Learning Framework for CTR Prediction in Live Recommender
Systems"): in training P(click) = P(seen | slot, device) x P(click | seen, user, module), and serving ranks by the
second factor alone, so the order is not a mirror of past placement.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from graphrec.rank.config import RankerConfig

__all__ = ["CrossLayer", "HomepageRanker", "RankerConfig"]


class CrossLayer(nn.Module):
    """x_{l+1} = x_0 * (W x_l + b) + x_l."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class HomepageRanker(nn.Module):
    """P(click | seen) of (user, module) rows from dense features and embeddings; P(seen) from slot and device.

    Args:
        num_dense: behaviour and context features per row (standardised inside with the stored statistics).
        embedding_dim: dimension of the user and module embeddings given as inputs (0: none).
        num_slots: slots the position tower knows (later slots share the last one).
        num_devices: devices the position tower knows.
    """

    def __init__(
        self, num_dense: int, embedding_dim: int, num_slots: int, num_devices: int, config: RankerConfig | None = None
    ) -> None:
        super().__init__()
        self.config = config or RankerConfig()
        self.num_dense, self.embedding_dim = num_dense, embedding_dim
        self.num_slots, self.num_devices = num_slots, num_devices
        self.register_buffer("dense_log", torch.zeros(num_dense, dtype=torch.bool))
        self.register_buffer("dense_mean", torch.zeros(num_dense))
        self.register_buffer("dense_std", torch.ones(num_dense))
        width = num_dense
        if embedding_dim:
            width += 2 * embedding_dim + 1 + (embedding_dim if self.config.embedding_products else 0)
        self.input_width = width  # columns of the rows `inputs` builds
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(self.config.cross_layers))
        layers: list[nn.Module] = []
        previous = width
        for size in self.config.hidden:
            layers += [nn.Linear(previous, size), nn.ReLU(), nn.Dropout(self.config.dropout)]
            previous = size
        self.deep = nn.Sequential(*layers)
        self.head = nn.Linear(width + previous, 1)
        if self.config.position_tower:
            self.slot_logit = nn.Embedding(num_slots, num_devices)
            nn.init.zeros_(self.slot_logit.weight)
            self.device_logit = nn.Embedding(num_devices, 1)
            nn.init.constant_(self.device_logit.weight, 2.0)  # starts near "always seen"

    def set_dense_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the training rows' (transformed) feature means and standard deviations, used for every later input."""
        self.dense_mean.copy_(mean)
        # A feature constant in training carries nothing: scale 1, so an unseen value at serving stays moderate.
        self.dense_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    @torch.no_grad()
    def fit_dense_transform(self, dense, block_rows: int = 1 << 16) -> None:
        """Fit the input transform on the training rows: counts (features never negative that reach above 2) enter
        as log1p, since their heavy tails would otherwise dominate the standardised inputs; then every feature is
        standardised with the transformed rows' mean and standard deviation (unbiased).

        `dense`: [n, F], a tensor, an array or anything that row slices turn into arrays (`RowColumns`), read
        `block_rows` rows at a time: the statistics are merged per block in float64, so no transformed copy of the
        whole matrix is made (three [n, F] temporaries at once before, 9 GB for a 10M-event shop's final fit). A
        block's temporaries (its float64 copy, deviations and squares) are about 30 bytes a value: 1.4 GB at once
        for blocks of 2^20 rows of 50 features, the ranker stage's peak on a 10M-event shop; 90 MB at 2^16, as fast."""

        def blocks():
            for start in range(0, len(dense), block_rows):
                yield torch.as_tensor(np.asarray(dense[start : start + block_rows]), dtype=torch.float32)

        if not len(dense):
            raise ValueError("fit_dense_transform: no training rows")
        low = high = None
        for block in blocks():
            mins, maxs = block.min(dim=0).values, block.max(dim=0).values
            low = mins if low is None else torch.minimum(low, mins)
            high = maxs if high is None else torch.maximum(high, maxs)
        self.dense_log.copy_((low >= 0) & (high > 2))
        # Chan et al.'s pairwise merge of block means and squared deviations: exact in float64, one pass.
        count, mean, squares = 0, torch.zeros_like(low, dtype=torch.float64), torch.zeros_like(low, dtype=torch.float64)
        for block in blocks():
            values = self._transform(block).double()
            n = len(values)
            block_mean = values.mean(dim=0)
            block_squares = ((values - block_mean) ** 2).sum(dim=0)
            delta = block_mean - mean
            total = count + n
            mean = mean + delta * (n / total)
            squares = squares + block_squares + delta**2 * (count * n / total)
            count = total
        std = torch.sqrt(squares / (count - 1)) if count > 1 else torch.full_like(mean, float("nan"))
        self.set_dense_statistics(mean.float(), std.float())

    def _transform(self, dense: torch.Tensor) -> torch.Tensor:
        return torch.where(self.dense_log, torch.log1p(torch.clamp(dense, min=0)), dense)

    def inputs(
        self, dense: torch.Tensor, user: torch.Tensor | None = None, module: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[n, width] the network's input row: standardised dense features, then the embeddings' terms."""
        parts = [(self._transform(dense) - self.dense_mean) / self.dense_std]
        if self.embedding_dim:
            if user is None or module is None:
                raise ValueError("this ranker was built with embeddings: pass the user and module vectors")
            parts += [user, module, (user * module).sum(dim=1, keepdim=True)]
            if self.config.embedding_products:
                parts.append(user * module)
        return torch.cat(parts, dim=1)

    def forward(
        self, dense: torch.Tensor, user: torch.Tensor | None = None, module: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[n] relevance logits: log-odds of a click given the module is seen. The serving score."""
        return self.relevance(self.inputs(dense, user, module))

    def relevance(self, x0: torch.Tensor) -> torch.Tensor:
        """[n] relevance logits of input rows built by `inputs` (the serving side edits them to attribute a score
        to groups of inputs)."""
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.head(torch.cat([x, self.deep(x0)], dim=1)).squeeze(1)

    def seen_logit(self, slot: torch.Tensor, device: torch.Tensor) -> torch.Tensor:
        """[n] log-odds that a module in `slot` (0-based) on `device` is seen; +inf-like when there is no tower."""
        if not self.config.position_tower:
            return torch.full(slot.shape, 30.0, device=slot.device)
        slot = torch.clamp(slot, max=self.num_slots - 1)
        per_device = self.slot_logit(slot).gather(1, device.unsqueeze(1)).squeeze(1)
        return per_device + self.device_logit(device).squeeze(1)

    def click_log_probability(
        self, relevance_logit: torch.Tensor, seen_logit: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log P(click) and log P(no click) under P(click) = sigmoid(seen) x sigmoid(relevance), computed stably."""
        log_click = F.logsigmoid(relevance_logit) + F.logsigmoid(seen_logit)
        log_no_click = torch.log(-torch.expm1(torch.clamp(log_click, max=-1e-7)))
        return log_click, log_no_click

    def click_loss(
        self, relevance_logit: torch.Tensor, seen_logit: torch.Tensor, clicked: torch.Tensor
    ) -> torch.Tensor:
        """Mean binary cross-entropy of the clicks under the position-aware model."""
        log_click, log_no_click = self.click_log_probability(relevance_logit, seen_logit)
        return -(clicked * log_click + (1 - clicked) * log_no_click).mean()
