"""Embedding models: a multi-behaviour LightGCN over user -> item (or content) edges, scored by dot product.

Each behaviour b (view, click, cart, wishlist, purchase) has its own symmetric-normalised bipartite adjacency
A_b = D_u^-1/2 R_b D_i^-1/2 (LightGCN, He et al. 2020, https://arxiv.org/abs/2002.02126). A layer mixes them with
learned behaviour weights alpha = softmax(a):

    e_u^(k+1) = sum_b alpha_b A_b e_i^(k),    e_i^(k+1) = sum_b alpha_b A_b^T e_u^(k)

and the final embedding is the mean over layers 0..K. Item inputs are an id embedding plus embeddings of the
item's features (category, brand; module type for content) plus a learned linear projection of each of its
content vectors (image, video, text; L2-normalised), as PinSage builds item inputs from visual and text features
(Ying et al. KDD 2018, https://arxiv.org/abs/1806.01973), so an item without interactions still gets a useful
vector. With one behaviour this is LightGCN; with zero layers and no features it is matrix factorisation.

The history term (optional) adds sum_b w_b log(1 + count_b(u, i)) over auxiliary behaviours to the dot product
for ranking, and (with `conversion`) w_c [u touched i] log10(c_i / r): the item's conversion rate
c_i = (t_i + 10 r) / (a_i + 10) (t_i users with the target behaviour on i, a_i users with an auxiliary one, r the
catalogue-wide t / a) relative to r, for items the user viewed or carted: among the items a user already looked
at, those that others who looked at them went on to buy are the likelier buys. The history term is trained on
top of the (detached) embeddings, which learn from uniform negatives alone and stay pure dot-product vectors for
the feature store.
"""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from torch import nn

from graphrec.embed.config import ModelConfig
from graphrec.embed.cooccurrence import Cooccurrence
from graphrec.embed.lookup import PairLookup
from graphrec.embed.propagation import MixedAdjacency, layer_mean
from graphrec.errors import InputError
from graphrec.graph.sampling import Subgraph


def _normalised_edges(users: torch.Tensor, items: torch.Tensor, num_users: int, num_items: int):
    """LightGCN's edge weights 1 / sqrt(deg_u deg_i) of distinct (user, item) pairs, and both degree vectors."""
    deg_u = torch.bincount(users, minlength=num_users).float()
    deg_i = torch.bincount(items, minlength=num_items).float()
    return (deg_u[users].clamp(min=1) * deg_i[items].clamp(min=1)).rsqrt(), deg_u, deg_i


def deepcopy_sharing(module: nn.Module, memo: dict, shared: tuple[str, ...]) -> nn.Module:
    """Deep-copy `module` except the attributes named in `shared`, which the copy references. For read-only data a
    module carries beside its parameters (the training graph, the tasks): an averaged copy of the model (weight
    averaging) then costs its parameters only, and torch cannot deep-copy the graph's sparse CSR tensors anyway."""
    for name in shared:
        value = module.__dict__.get(name)
        if value is not None:
            memo[id(value)] = value
    clone = type(module).__new__(type(module))
    memo[id(module)] = clone
    clone.__setstate__(copy.deepcopy(module.__getstate__(), memo))
    return clone


class MultiBehaviourGCN(nn.Module):
    """Multi-behaviour LightGCN with learned behaviour weights, feature-aware item inputs and a history term."""

    def __init__(
        self,
        num_users: int,
        num_items: int,
        behaviours: list[str],
        target: str,
        config: ModelConfig | None = None,
        feature_sizes: dict[str, int] | None = None,
        vector_sizes: dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        self.num_users, self.num_items = num_users, num_items
        self.behaviours = list(self.config.behaviours or behaviours)
        if target not in self.behaviours:
            self.behaviours.append(target)
        self.target = target
        dim = self.config.dim
        self.user_embedding = nn.Embedding(num_users, dim)
        self.item_embedding = nn.Embedding(num_items, dim)
        nn.init.normal_(self.user_embedding.weight, std=self.config.init_std)
        nn.init.normal_(self.item_embedding.weight, std=self.config.init_std)
        sizes = (feature_sizes or {}) if self.config.use_features else {}
        # Index `size` is the padding row for items without that feature (stored as -1).
        self.feature_embedding = nn.ModuleDict(
            {name: nn.Embedding(size + 1, dim, padding_idx=size) for name, size in sizes.items()}
        )
        for embedding in self.feature_embedding.values():
            nn.init.normal_(embedding.weight, std=self.config.init_std)
            with torch.no_grad():
                embedding.weight[-1].zero_()
        # Feature vectors enter through a learned gate that starts closed: shared category / brand vectors then
        # only grow as far as they help, instead of pulling every item of a category to one point early on.
        self.feature_gate = nn.Parameter(torch.zeros(()))
        use_content = self.config.use_features and self.config.use_content
        vectors = (vector_sizes or {}) if use_content else {}
        self.vector_projection = nn.ModuleDict(
            {name: nn.Linear(size, dim, bias=False) for name, size in vectors.items()}
        )
        for projection in self.vector_projection.values():
            nn.init.normal_(projection.weight, std=self.config.init_std)
        if vectors:  # its own gate, opening as far as content helps; absent without vectors (older artifacts)
            self.content_gate = nn.Parameter(torch.zeros(()))
        self.behaviour_logits = nn.Parameter(torch.zeros(len(self.behaviours)))
        self.history_behaviours = [b for b in self.behaviours if b != target] if self.config.history else []
        self.history_weight = nn.Parameter(torch.zeros(len(self.history_behaviours)))
        self.use_conversion = bool(self.history_behaviours) and self.config.conversion
        if self.use_conversion:
            self.conversion_weight = nn.Parameter(torch.zeros(()))
        self.use_cooccurrence = bool(self.history_behaviours) and self.config.cooccurrence
        if self.use_cooccurrence:
            self.cooccurrence_weight = nn.Parameter(torch.zeros(()))
        self._cooccurrence: Cooccurrence | None = None
        self._touched: PairLookup | None = None
        self._conversion = torch.zeros(num_items)
        self._degrees: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per behaviour: user and item degrees
        self._adjacency: MixedAdjacency | None = None
        self._history: dict[str, PairLookup] = {}
        self.features: dict[str, torch.Tensor] = {}
        self._has_edges = torch.ones(num_items, dtype=torch.bool)

    def __deepcopy__(self, memo: dict) -> MultiBehaviourGCN:
        # A copy shares the graph that set_graph() attached: nothing modifies it in place.
        graph = ("_degrees", "_adjacency", "_history", "_touched", "_conversion_counts", "_conversion", "_bought")
        graph += ("features", "_has_edges", "_cooccurrence")
        return deepcopy_sharing(self, memo, graph)

    def _pair_keys(self, edges: dict[str, tuple[torch.Tensor, ...]], behaviours: list[str]) -> torch.Tensor:
        """Distinct user * num_items + item keys of the pairs with any of `behaviours`."""
        return torch.unique(torch.cat([edges[b][0].long() * self.num_items + edges[b][1].long() for b in behaviours]))

    def spectral_init(self, edges: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], seed: int = 0) -> None:
        """Start the user and item id embeddings from the top `dim` singular vectors of the symmetric-normalised
        adjacency of all behaviours together. LightGCN's propagation keeps that subspace (SVD-GCN, Peng et al.
        CIKM 2022), so training starts near where propagation leads instead of from noise: on Gowalla the first
        epochs gain about two epochs of progress. Randomised SVD (torch.svd_lowrank), seeded, a second or two."""
        keys = self._pair_keys(edges, self.behaviours)
        users, items = keys // self.num_items, keys % self.num_items
        deg_u = torch.bincount(users, minlength=self.num_users).float().clamp(min=1)
        deg_i = torch.bincount(items, minlength=self.num_items).float().clamp(min=1)
        matrix = torch.sparse_coo_tensor(
            torch.stack([users, items]), (deg_u[users] * deg_i[items]).rsqrt(), (self.num_users, self.num_items)
        ).coalesce()
        rank = min(self.config.dim, self.num_users, self.num_items)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            left, _, right = torch.svd_lowrank(matrix, q=rank, niter=4)
        scale = self.config.init_std * self.config.dim**0.5  # the mean row norm of the normal start
        with torch.no_grad():
            for table, vectors in ((self.user_embedding, left), (self.item_embedding, right)):
                norm = vectors.norm(dim=1).mean().clamp(min=1e-12)
                table.weight[:, :rank] = vectors * (scale / norm)

    def hyperparameters(self) -> dict:
        """Everything needed to rebuild this module (stored in checkpoints and artifacts)."""
        return {
            "num_users": self.num_users,
            "num_items": self.num_items,
            "behaviours": self.behaviours,
            "target": self.target,
            "config": asdict(self.config),
            "feature_sizes": {n: e.num_embeddings - 1 for n, e in self.feature_embedding.items()},
            "vector_sizes": {n: p.in_features for n, p in self.vector_projection.items()},
        }

    def set_graph(
        self,
        edges: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
        features: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Attach the training graph: `edges[b] = (users, items, counts)` per behaviour, and item features
        (categorical codes, and content vectors [num_items, size] with zero rows where an item has none)."""
        features = features or {}
        missing = [n for n in (*self.feature_embedding, *self.vector_projection) if n not in features]
        if missing:
            raise InputError(
                f"the model was trained with the item features {missing}, which this graph lacks "
                f"(it has {sorted(features)}); attach a snapshot with the same catalog columns"
            )
        self._degrees = {}
        adjacencies = []
        for behaviour in self.behaviours:
            users, items, _ = edges[behaviour]
            values, deg_u, deg_i = _normalised_edges(users, items, self.num_users, self.num_items)
            self._degrees[behaviour] = (deg_u, deg_i)
            adjacencies.append((users, items, values))
        self._adjacency = MixedAdjacency(adjacencies, self.num_users, self.num_items)
        # An item without interactions has an id vector trained only as a negative: it carries no information,
        # so such an item is its features and content alone, at training and inference alike.
        self._has_edges = sum(deg_i for _, deg_i in self._degrees.values()) > 0
        self._history = {
            b: PairLookup(edges[b][0], edges[b][1], torch.log1p(edges[b][2].float()), self.num_items)
            for b in self.history_behaviours
        }
        if self.use_conversion:
            keys = self._pair_keys(edges, self.history_behaviours)
            self._touched = PairLookup(
                keys // self.num_items, keys % self.num_items, torch.ones(len(keys)), self.num_items
            )
            touched = torch.bincount(keys % self.num_items, minlength=self.num_items).float()
            target = torch.bincount(edges[self.target][1], minlength=self.num_items).float()
            # Empirical-Bayes smoothing toward the catalogue-wide rate r (10 pseudo-touches), on a log10 scale
            # centred on r: an item touched by few users stays near 0 instead of inheriting an extreme rate.
            rate = target.sum() / touched.sum().clamp(min=1)
            self._conversion_counts = (target, touched, rate)
            self._conversion = self._conversion_rate(torch.arange(self.num_items))
            users, items, _ = edges[self.target]
            self._bought = PairLookup(users, items, torch.ones(len(users)), self.num_items)
        if self.use_cooccurrence:
            keys = self._pair_keys(edges, self.behaviours)
            aux = self._pair_keys(edges, self.history_behaviours)
            bought = self._pair_keys(edges, [self.target])
            alone = bought[~torch.isin(bought, aux)]
            self._cooccurrence = Cooccurrence(
                (keys // self.num_items, keys % self.num_items),
                (alone // self.num_items, alone % self.num_items),
                self.num_users,
                self.num_items,
                self.config.cooccurrence_neighbours,
            )
        self.features = self._feature_inputs(features)

    def _feature_inputs(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Model-ready features of those in `features` the model has: categorical codes with -1 mapped to the
        padding row, content vectors L2-normalised (zero rows stay zero)."""
        inputs = {}
        for name, embedding in self.feature_embedding.items():
            if name in features:
                values = features[name].long()
                inputs[name] = torch.where(values < 0, embedding.num_embeddings - 1, values)
        for name in self.vector_projection:
            if name in features:
                inputs[name] = nn.functional.normalize(features[name].float(), dim=-1)
        return inputs

    def _feature_vectors(
        self, features: dict[str, torch.Tensor], warm: torch.Tensor | None = None
    ) -> torch.Tensor | int:
        """The feature and content part of layer-0 item vectors (0 where there is none). `warm` (bool, one per row):
        the rows with a trained id vector, which take no content part with `content_inputs: cold`."""
        total = 0
        for name, embedding in self.feature_embedding.items():
            if name in features:
                # The gate scales the small table before the gather: the same values as scaling every row after.
                scaled = self.feature_gate * embedding.weight
                total = total + nn.functional.embedding(features[name], scaled, padding_idx=embedding.padding_idx)
        for name, projection in self.vector_projection.items():
            if name not in features:
                continue
            if warm is not None and self.config.content_inputs == "cold":
                # Only rows without a trained id vector take the part: projected alone, not masked after.
                rows = torch.nonzero(~warm).flatten()
                part = self.content_gate * projection(features[name][rows])
                if isinstance(total, int):
                    total = torch.zeros(len(warm), part.shape[1], dtype=part.dtype)
                total = total.index_add(0, rows, part)
            else:
                total = total + self.content_gate * projection(features[name])
        return total

    def item_inputs(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Layer-0 item vectors: id embedding plus feature embeddings, of `items` or of all. [num_items, dim]"""
        if items is None:
            warm = self._has_edges
            vectors = self.item_embedding.weight * warm[:, None]
            features = self.features
        else:
            warm = self._has_edges[items]
            vectors = self.item_embedding(items) * warm[:, None]
            features = {name: values[items] for name, values in self.features.items()}
        return vectors + self._feature_vectors(features, warm)

    @property
    def has_item_inputs(self) -> bool:
        """Whether items have inputs besides their id (catalog features or content vectors)."""
        return bool(len(self.feature_embedding) or len(self.vector_projection))

    def cold_item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Final embeddings `items` would have without interactions: their feature and content part of layer 0
        alone, averaged over the K + 1 layers (the others are empty), as `embed_items` computes for a new item."""
        features = {name: values[items] for name, values in self.features.items()}
        part = self._feature_vectors(features)
        if isinstance(part, int):
            part = torch.zeros(len(items), self.config.dim)
        return self.output(part / (self.config.num_layers + 1))

    def behaviour_weights(self) -> torch.Tensor:
        return torch.softmax(self.behaviour_logits, 0)

    def propagate_layers(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """User and item vectors of every layer 0..K."""
        if not self._degrees:
            raise RuntimeError("call set_graph() before propagate()")
        alpha = self.behaviour_weights()
        user, item = self.user_embedding.weight, self.item_inputs()
        user_layers, item_layers = [user], [item]
        values = self._adjacency.values(alpha)
        for _ in range(self.config.num_layers):
            user, item = (
                self._adjacency.propagate(values, item, to_items=False),
                self._adjacency.propagate(values, user, to_items=True),
            )
            user_layers.append(user)
            item_layers.append(item)
        return user_layers, item_layers

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Final user and item embeddings ([U, dim], [I, dim]) and the item vectors of every layer."""
        user_layers, item_layers = self.propagate_layers()
        return self.output(layer_mean(user_layers)), self.output(layer_mean(item_layers)), item_layers

    def propagate_subgraph(self, subgraph: Subgraph) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item embeddings of a sampled neighbourhood ([len(users), dim], [len(items), dim]): the same
        layers as `propagate()`, run on the subgraph's edges only. Edge weights are the full graph's
        1 / sqrt(deg_u deg_i), scaled by deg / sampled deg of the receiving node, so a node that kept f of its
        d neighbours sums them as if it had all d (GraphSAGE-style estimate). Nodes whose neighbours were all
        kept, the seeds of a sampler with fanouts -1, get their `propagate()` embeddings exactly."""
        if not self._degrees:
            raise RuntimeError("call set_graph() before propagate_subgraph()")
        alpha = self.behaviour_weights()
        user, item = self.user_embedding(subgraph.users), self.item_inputs(subgraph.items)
        num_users, num_items = len(subgraph.users), len(subgraph.items)
        edges, to_item = [], []  # per behaviour: (users, items, weights towards users); weights towards items
        for name in self.behaviours:
            users, items = subgraph.edges[name]
            deg_u, deg_i = self._degrees[name]
            full_u, full_i = deg_u[subgraph.users[users]], deg_i[subgraph.items[items]]
            sampled_u = torch.bincount(users, minlength=num_users).float()[users]
            sampled_i = torch.bincount(items, minlength=num_items).float()[items]
            norm = (full_u * full_i).clamp(min=1).rsqrt()
            edges.append((users, items, norm * full_u / sampled_u))
            to_item.append(norm * full_i / sampled_i)
        # The two directions weigh a pair differently (each by its receiving node's sampled degree): the same pairs
        # with two sets of values, each used one way.
        to_users = MixedAdjacency(edges, num_users, num_items)
        to_items = to_users.reweighted(to_item)
        user_values, item_values = to_users.values(alpha), to_items.values(alpha)
        user_layers, item_layers = [user], [item]
        for _ in range(self.config.num_layers):
            user, item = (
                to_users.propagate(user_values, item, to_items=False),
                to_items.propagate(item_values, user, to_items=True),
            )
            user_layers.append(user)
            item_layers.append(item)
        return self.output(layer_mean(user_layers)), self.output(layer_mean(item_layers))

    def output(self, vectors: torch.Tensor) -> torch.Tensor:
        """Final embeddings from the layer mean: as is, or normalised and scaled (`config.normalize`)."""
        if not self.config.normalize:
            return vectors
        return nn.functional.normalize(vectors, dim=-1) / self.config.temperature**0.5

    HISTORY_PARAMETERS = ("history_weight", "conversion_weight", "cooccurrence_weight")

    def _conversion_rate(self, items: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        """log10(c_i / r) for `items`, leaving out `own` target interactions (1 where the scored user's own
        purchase of the item is in the counts)."""
        target, touched, rate = self._conversion_counts
        bought = target[items] - (own if own is not None else 0)
        smoothed = (bought + 10 * rate) / (touched[items] + 10)
        return torch.log10(smoothed.clamp(min=1e-12) / rate.clamp(min=1e-12))

    def history_scores(
        self,
        users: torch.Tensor,
        items: torch.Tensor | None = None,
        leave_own_out: bool = False,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The history term for (user, item) pairs, or for all items ([B, num_items]) when items is None.

        `leave_own_out` (training): an item's conversion rate leaves out the user's own purchase of it, as for a
        held-out purchase at evaluation; otherwise every training positive would look like a better seller than
        the items the user buys next, and the learned weight would over-trust the rate.
        `out` (all items only): a [B, num_items] block the term is added into and returned, e.g. the dot products.
        """
        if items is None:
            return self._history_rows(users, out)
        if not self.history_behaviours:
            return torch.zeros(len(users))
        total = 0
        for weight, behaviour in zip(self.history_weight, self.history_behaviours, strict=True):
            total = total + weight * self._history[behaviour](users, items)
        if self.use_conversion and self._touched is not None:
            own = self._bought(users, items) if leave_own_out else None
            touched, rate = self._touched(users, items), self._conversion_rate(items, own)
            total = total + self.conversion_weight * touched * rate
        if self.use_cooccurrence and self._cooccurrence is not None:
            scores = self._cooccurrence.pairs(users, items, leave_own_out=leave_own_out)
            total = total + self.cooccurrence_weight * scores
        return total

    def _history_rows(self, users: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """The history term of every item for `users`, added into `out` (zeros where None). The histories are
        sparse, so their weighted entries are scattered into the one block: adding a dense [B, num_items] row
        block per behaviour cost more than the dot products themselves on a 327k-item catalogue."""
        out = torch.zeros(len(users), self.num_items) if out is None else out
        if not self.history_behaviours:
            return out
        parts = []
        for weight, behaviour in zip(self.history_weight, self.history_behaviours, strict=True):
            rows, columns, values = self._history[behaviour].entries(users)
            parts.append((rows, columns, weight * values))
        if self.use_conversion and self._touched is not None:
            rows, columns, values = self._touched.entries(users)
            parts.append((rows, columns, self.conversion_weight * values * self._conversion[columns]))
        for rows, columns, values in parts:  # a lookup holds each (user, item) once: no repeated index in a part
            out[rows, columns] += values.to(out.dtype)
        if self.use_cooccurrence and self._cooccurrence is not None:
            out = out + self.cooccurrence_weight * self._cooccurrence.rows(users)
        return out

    def embed_users(
        self,
        edges: dict[str, tuple[torch.Tensor, torch.Tensor]],
        num_users: int,
        item_layers: list[torch.Tensor],
        user_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Inductive user embeddings from interactions alone, without retraining.

        Args:
            edges: per behaviour, (local user index in [0, num_users), item index) pairs.
            num_users: number of users to embed.
            item_layers: the item vectors of every layer from `propagate()`.
            user_ids: training indices of users that have one (their id embedding is layer 0); others start at 0.

        For a training user with the same edges this equals its `propagate()` embedding exactly; for a new user
        item degrees are those of the training graph.
        """
        layer0 = torch.zeros(num_users, self.config.dim)
        if user_ids is not None:
            known = user_ids >= 0
            layer0[known] = self.user_embedding.weight[user_ids[known]]
        return self._inductive_mean(layer0, edges, item_layers, degree_slot=1)

    def embed_items(
        self,
        edges: dict[str, tuple[torch.Tensor, torch.Tensor]],
        num_items: int,
        user_layers: list[torch.Tensor],
        features: dict[str, torch.Tensor] | None = None,
        item_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Inductive item embeddings from catalog features and interactions, without retraining.

        Args:
            edges: per behaviour, (local item index in [0, num_items), user index) pairs.
            num_items: number of items to embed.
            user_layers: the user vectors of every layer from `propagate_layers()`.
            features: per feature name, the items' feature indices (-1 where missing), and per content vector
                name, the items' vectors ([num_items, size], zero rows where missing); absent names add nothing.
            item_ids: training indices of items that have one (their id embedding joins layer 0); others have none.

        For a training item with the same edges and features this equals its `propagate()` embedding.
        """
        layer0 = torch.zeros(num_items, self.config.dim)
        warm = torch.zeros(num_items, dtype=torch.bool)  # items with a trained id vector
        if item_ids is not None:
            known = item_ids >= 0
            warm[known] = self._has_edges[item_ids[known]]
            layer0[warm] = self.item_embedding.weight[item_ids[warm]]
        layer0 = layer0 + self._feature_vectors(self._feature_inputs(features or {}), warm)
        return self._inductive_mean(layer0, edges, user_layers, degree_slot=0)

    def _inductive_mean(
        self,
        layer0: torch.Tensor,
        edges: dict[str, tuple[torch.Tensor, torch.Tensor]],
        neighbour_layers: list[torch.Tensor],
        degree_slot: int,
    ) -> torch.Tensor:
        """LightGCN layers for new nodes: layer k+1 sums the neighbours' layer-k vectors, normalised by
        1 / sqrt(deg_new * deg_neighbour) with the neighbours' training degrees (`_degrees[b][degree_slot]`: 0 the
        users', 1 the items'); returns the mean over layers 0..K. `edges[b]` = (new node index, neighbour index)."""
        alpha = self.behaviour_weights()
        count = len(layer0)
        layers = [layer0]
        for k in range(self.config.num_layers):
            total = torch.zeros_like(layer0)
            for b, name in enumerate(self.behaviours):
                if name not in edges:
                    continue
                nodes, neighbours = edges[name]
                deg_new = torch.bincount(nodes, minlength=count).float()
                deg_neighbour = self._degrees[name][degree_slot]
                norm = (deg_new[nodes].clamp(min=1) * deg_neighbour[neighbours].clamp(min=1)).rsqrt()
                total = total.index_add(0, nodes, alpha[b] * norm[:, None] * neighbour_layers[k][neighbours])
            layers.append(total)
        return self.output(layer_mean(layers))
