"""Neighbour sampling: the K-hop neighbourhood of a batch's users and items, for mini-batch training on graphs
where propagating the whole graph on every step costs too much time or memory.

Written on torch rather than taken from PyG: PyG's `NeighborLoader` / `NeighborSampler` need pyg-lib or
torch-sparse, which have no builds for the torch this project pins, so they would not run on CPU machines at all.
The semantics are PyG's: at hop k every frontier node keeps up to `fanouts[k]` of its neighbours (all behaviours
together), drawn uniformly without replacement (-1 keeps all), and the next frontier is the nodes reached.
With fanouts of -1 the subgraph holds every edge the seeds' K-layer embeddings depend on, so propagating it
gives their full-graph embeddings exactly (`MultiBehaviourGCN.propagate_subgraph`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graphrec.metrics import expand_rows


@dataclass
class Subgraph:
    """Nodes (global ids, sorted) and per-behaviour edges (local positions into `users` / `items`)."""

    users: torch.Tensor
    items: torch.Tensor
    edges: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def user_index(self, users: torch.Tensor) -> torch.Tensor:
        """Local positions of global user ids (which must be in the subgraph)."""
        return torch.searchsorted(self.users, users)

    def item_index(self, items: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.items, items)


class _Adjacency:
    """One side's CSR over all behaviours: the neighbours of node n are `neighbours[indptr[n]:indptr[n + 1]]`,
    each with the behaviour it came through."""

    def __init__(self, nodes: torch.Tensor, neighbours: torch.Tensor, behaviour: torch.Tensor, size: int) -> None:
        order = torch.argsort(nodes, stable=True)
        self.neighbours, self.behaviour = neighbours[order], behaviour[order]
        self.indptr = torch.zeros(size + 1, dtype=torch.long)
        self.indptr[1:] = torch.cumsum(torch.bincount(nodes, minlength=size), 0)

    def sample(self, nodes: torch.Tensor, fanout: int, generator: torch.Generator):
        """(source node, neighbour, behaviour) of up to `fanout` edges per node, uniformly without replacement."""
        starts, ends = self.indptr[nodes], self.indptr[nodes + 1]
        if fanout < 0:
            rows, positions = expand_rows(starts, ends)
        else:
            small = ends - starts <= fanout  # these keep all their edges
            rows, positions = expand_rows(starts[small], ends[small])
            rows = torch.nonzero(small).squeeze(1)[rows]
            large = torch.nonzero(~small).squeeze(1)
            offsets = _floyd(ends[large] - starts[large], fanout, generator)
            rows = torch.cat([rows, large.repeat_interleave(fanout)])
            positions = torch.cat([positions, (starts[large, None] + offsets).reshape(-1)])
        return nodes[rows], self.neighbours[positions], self.behaviour[positions]


def _floyd(degrees: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` distinct offsets in [0, degree) per row, each subset equally likely: Floyd's algorithm, run for
    all rows at once. Its cost is O(count^2) per row whatever the degree, where shuffling each row's offsets
    would cost O(degree); a popular item has thousands of neighbours and keeps ten."""
    chosen = torch.empty(len(degrees), count, dtype=torch.long)
    for k in range(count):
        top = degrees - count + k  # draw from [0, top]; if taken, take `top` itself, which cannot be
        draw = (torch.rand(len(degrees), generator=generator, dtype=torch.float64) * (top + 1)).long()
        taken = (chosen[:, :k] == draw[:, None]).any(1)
        chosen[:, k] = torch.where(taken, top, draw)
    return chosen


class NeighbourSampler:
    """Samples `Subgraph`s of a user-item graph with several behaviours.

    Args:
        edges: `edges[b] = (users, items, ...)` per behaviour, as in a `RecTask`.
        behaviours: the behaviours to follow (the model's propagation behaviours).
        num_users / num_items: node counts.
        fanouts: neighbours kept per node at each hop (-1: all); one entry per propagation layer.
    """

    def __init__(
        self,
        edges: dict[str, tuple[torch.Tensor, ...]],
        behaviours: list[str],
        num_users: int,
        num_items: int,
        fanouts: list[int],
    ) -> None:
        if not fanouts or any(f == 0 or f < -1 for f in fanouts):
            raise ValueError(f"fanouts must be a non-empty list of positive counts or -1, not {fanouts!r}")
        self.behaviours, self.fanouts = list(behaviours), list(fanouts)
        users = torch.cat([edges[b][0].long() for b in self.behaviours])
        items = torch.cat([edges[b][1].long() for b in self.behaviours])
        kind = torch.repeat_interleave(
            torch.arange(len(self.behaviours)), torch.tensor([len(edges[b][0]) for b in self.behaviours])
        )
        self.num_items = num_items
        self._from_user = _Adjacency(users, items, kind, num_users)
        self._from_item = _Adjacency(items, users, kind, num_items)

    def sample(self, users: torch.Tensor, items: torch.Tensor, generator: torch.Generator) -> Subgraph:
        """The neighbourhood of seed `users` and `items` (global ids; repeats allowed)."""
        frontier_users, frontier_items = torch.unique(users.long()), torch.unique(items.long())
        all_users, all_items = [frontier_users], [frontier_items]
        found = []  # (user, item, behaviour) edges
        for fanout in self.fanouts:
            u, i, b = self._from_user.sample(frontier_users, fanout, generator)
            found.append((u, i, b))
            i2, u2, b2 = self._from_item.sample(frontier_items, fanout, generator)
            found.append((u2, i2, b2))
            # Only nodes not yet expanded go on: a node's neighbours are drawn once.
            seen_users, seen_items = torch.cat(all_users), torch.cat(all_items)
            frontier_users = _new(torch.unique(u2), seen_users)
            frontier_items = _new(torch.unique(i), seen_items)
            all_users.append(frontier_users)
            all_items.append(frontier_items)
        node_users, node_items = torch.unique(torch.cat(all_users)), torch.unique(torch.cat(all_items))
        u = torch.cat([f[0] for f in found])
        i = torch.cat([f[1] for f in found])
        b = torch.cat([f[2] for f in found])
        # An edge drawn from both of its ends is one edge.
        keys = torch.unique((b * (len(node_users) + 1) + torch.searchsorted(node_users, u)) * self.num_items + i)
        i, rest = keys % self.num_items, keys // self.num_items
        b, u = rest // (len(node_users) + 1), rest % (len(node_users) + 1)
        local_items = torch.searchsorted(node_items, i)
        edges = {name: (u[b == k], local_items[b == k]) for k, name in enumerate(self.behaviours)}
        return Subgraph(node_users, node_items, edges)


def _new(nodes: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """`nodes` (sorted, distinct) that are not in `seen`."""
    return nodes[~torch.isin(nodes, seen)]
