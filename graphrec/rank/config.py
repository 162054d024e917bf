"""Settings of the ranker's architecture: a plain dataclass with no heavy imports, so the command line shows it
without loading torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from graphrec.errors import at_least_zero, check_settings


@dataclass
class RankerConfig:
    """Architecture of the ranker.

    Args:
        cross_layers: DCN-v2 cross layers (full-rank).
        hidden: widths of the deep tower's layers.
        dropout: dropout in the deep tower.
        embedding_products: add the element-wise product of the user and module embeddings to the input (their dot
            product is always an input when embeddings are).
        position_tower: learn P(seen | slot, device) beside relevance (PAL); without it the slot is ignored.
    """

    cross_layers: int = 2
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.1
    embedding_products: bool = True
    position_tower: bool = True

    def __post_init__(self) -> None:
        check_settings(
            "ranker.model",
            self,
            {
                "cross_layers": (at_least_zero, "0 or more"),
                "hidden": (lambda v: all(w > 0 for w in v), "a list of positive widths"),
                "dropout": (lambda v: v is not None and 0 <= v < 1, "in [0, 1)"),
            },
        )
