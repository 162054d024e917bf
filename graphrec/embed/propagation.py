"""One propagation step over every behaviour at once: `sum_b alpha_b A_b @ x` as a single sparse product.

The behaviours' normalised adjacencies A_b are merged into one matrix over the distinct (user, item) pairs, whose
values `sum_b alpha_b A_b[u, i]` are rebuilt from the learned behaviour weights alpha once per propagation, at the
cost of the pairs. Summing one product per behaviour instead cost `behaviours x (users + items) x dim` in dense
scaling and adding per layer, forward and backward: on a shop with 36k items and 54k interactions that was 85 % of a
training step, so a step's cost followed the catalogue, not the interactions. torch has no sparse product with a
gradient for the values of a CSR matrix, hence the autograd function below: the gradient of alpha is computed pair
by pair (`<grad[row], x[col]>` on the pairs, summed per behaviour), which also costs the pairs.
"""

from __future__ import annotations

import copy
import warnings

import torch


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # CSR is "beta" in torch but is the fastest CPU spmm here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def layer_mean(layers: list[torch.Tensor]) -> torch.Tensor:
    """The mean of equally shaped layer vectors, as a chain of additions: `torch.stack(layers).mean(0)` copies
    every layer into one tensor first, which with its backward cost 5x more (33 against 6 ms for 4 x 37k x 64)."""
    total = layers[0]
    for layer in layers[1:]:
        total = total + layer
    return total / len(layers)


class MixedAdjacency:
    """The distinct (user, item) pairs of every behaviour, with each behaviour's normalised weight per pair, in
    CSR order both ways (users <- items and items <- users).

    Args:
        adjacencies: per behaviour, (users, items, values) of its normalised adjacency (distinct pairs).
        num_users, num_items: the matrix's shape.
    """

    def __init__(
        self, adjacencies: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], num_users: int, num_items: int
    ) -> None:
        self.num_users, self.num_items = num_users, num_items
        keys = torch.cat([users.long() * num_items + items.long() for users, items, _ in adjacencies])
        unique, self._inverse = torch.unique(keys, sorted=True, return_inverse=True)  # each edge's pair
        self.rows, self.cols = unique // num_items, unique % num_items  # users, items; sorted by user then item
        self.weights = self._weights([values for _, _, values in adjacencies])
        self.crow = torch.zeros(num_users + 1, dtype=torch.long)
        self.crow[1:] = torch.cumsum(torch.bincount(self.rows, minlength=num_users), 0)
        self.order_t = torch.argsort(self.cols * num_users + self.rows)  # the same pairs sorted by item then user
        self.crow_t = torch.zeros(num_items + 1, dtype=torch.long)
        self.crow_t[1:] = torch.cumsum(torch.bincount(self.cols, minlength=num_items), 0)
        self.rows_t = self.rows[self.order_t]
        self.weights_t = self.weights[:, self.order_t].contiguous()

    def _weights(self, values: list[torch.Tensor]) -> torch.Tensor:
        # [behaviours, pairs]: dense, since a shop has a handful of behaviours; behaviour-major, as `alpha @ weights`
        # is 3x faster than `weights @ alpha` with pairs first.
        behaviour = torch.repeat_interleave(torch.arange(len(values)), torch.tensor([len(v) for v in values]))
        weights = torch.zeros(len(values), len(self.cols))
        weights.index_put_((behaviour, self._inverse), torch.cat([v.float() for v in values]), accumulate=True)
        return weights

    def reweighted(self, values: list[torch.Tensor]) -> MixedAdjacency:
        """The same pairs with other per-behaviour values (in the order of the edges given at construction)."""
        other = copy.copy(self)
        other.weights = self._weights(values)
        other.weights_t = other.weights[:, self.order_t].contiguous()
        return other

    def __len__(self) -> int:
        return self.weights.shape[1]

    def values(self, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The merged matrix's values `sum_b alpha_b A_b` per pair, in user order and in item order: computed once
        per propagation and shared by its layers, so the gradient of alpha sums over them in two products."""
        alpha = alpha.to(self.weights.dtype)
        return alpha @ self.weights, alpha @ self.weights_t

    def propagate(self, values: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor, to_items: bool) -> torch.Tensor:
        """`sum_b alpha_b A_b @ x` (users <- items), or `sum_b alpha_b A_b^T @ x` with `to_items`, for
        `values = self.values(alpha)`; differentiable in the values (so in alpha) and in x."""
        return _PairMatmul.apply(*values, x, self, to_items)


def _pair_gradient(matrix: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, needed: bool) -> torch.Tensor:
    """`<grad[r], x[c]>` for every stored pair (r, c) of `matrix`, in its order (zeros where not `needed`)."""
    if not needed:
        return torch.zeros(matrix.values().shape, dtype=grad.dtype)
    return torch.sparse.sampled_addmm(matrix, grad, x.T, beta=0.0).values()


class _PairMatmul(torch.autograd.Function):
    """A CSR product whose gradient reaches the matrix's values. `values_t` is `values` in the transpose's order:
    the one the product takes with `to_items`, and the other one's backward."""

    @staticmethod
    def forward(ctx, values, values_t, x, adjacency: MixedAdjacency, to_items: bool):
        values, values_t = values.to(x.dtype), values_t.to(x.dtype)
        ctx.save_for_backward(values, values_t, x)
        ctx.adjacency, ctx.to_items = adjacency, to_items
        a = adjacency
        if to_items:
            return _csr(a.crow_t, a.rows_t, values_t, (a.num_items, a.num_users)) @ x
        return _csr(a.crow, a.cols, values, (a.num_users, a.num_items)) @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        values, values_t, x = ctx.saved_tensors
        a, to_items = ctx.adjacency, ctx.to_items
        forward = _csr(a.crow, a.cols, values, (a.num_users, a.num_items))
        transpose = _csr(a.crow_t, a.rows_t, values_t, (a.num_items, a.num_users))
        grad_values = grad_values_t = grad_x = None
        if ctx.needs_input_grad[2]:
            grad_x = (forward if to_items else transpose) @ grad
        # d out[r] / d value(r, c) = x[c]: per pair, <grad[r], x[c]>, which the sampled product computes on the
        # pairs alone (10x faster than gathering both rows). With one behaviour alpha is the softmax of one logit,
        # whose gradient is 0 whatever the values' is: zeros, so the logit still gets its (zero) gradient, as DDP
        # expects of every parameter.
        if to_items and ctx.needs_input_grad[1]:
            grad_values_t = _pair_gradient(transpose, grad, x, len(a.weights) > 1)
        if not to_items and ctx.needs_input_grad[0]:
            grad_values = _pair_gradient(forward, grad, x, len(a.weights) > 1)
        return grad_values, grad_values_t, grad_x, None, None
