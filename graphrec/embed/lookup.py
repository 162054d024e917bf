"""Sparse (row, column) -> value lookups over a sorted key array, shared by the model and its history terms."""

from __future__ import annotations

import torch

from graphrec.metrics import expand_rows


class PairLookup:
    """Values of (user, item) pairs in a sorted key array: gathers sparse matrix entries without densifying."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, values: torch.Tensor, num_items: int) -> None:
        keys = users.long() * num_items + items.long()
        order = torch.argsort(keys)
        self.keys, self.values, self.num_items = keys[order], values[order], num_items

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if len(self.keys) == 0:
            return torch.zeros(len(users))
        query = users.long() * self.num_items + items.long()
        position = torch.searchsorted(self.keys, query).clamp(max=len(self.keys) - 1)
        found = self.keys[position] == query
        return torch.where(found, self.values[position], torch.zeros(()))

    def rows(self, users: torch.Tensor) -> torch.Tensor:
        """Dense [len(users), num_items] rows."""
        out = torch.zeros(len(users), self.num_items)
        rows, columns, values = self.entries(users)
        out[rows, columns] = values
        return out

    def entries(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored entries of `users`' rows: (position in `users`, column, value), so a caller can add them into
        a dense block it already holds instead of allocating rows of zeros."""
        if len(self.keys) == 0:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty, self.values[:0]
        starts = torch.searchsorted(self.keys, users.long() * self.num_items)
        ends = torch.searchsorted(self.keys, (users.long() + 1) * self.num_items)
        rows, index = expand_rows(starts, ends)
        return rows, self.keys[index] % self.num_items, self.values[index]
