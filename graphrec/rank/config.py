"""Settings of the ranker's features and architecture: plain dataclasses with no heavy imports, so the command line
shows them without loading torch or polars."""

from __future__ import annotations

from dataclasses import dataclass, field

from graphrec.data.config import DEVICES, EVENT_TYPES, VECTOR_SUFFIX
from graphrec.errors import at_least_zero, check_settings, positive

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 3.0,
    "add_to_wishlist": 3.0,
    "purchase": 4.0,
}


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


@dataclass
class RankFeatureConfig:
    """How behaviour features are computed.

    Args:
        windows_days: windows of the user's per-type item event counts, in whole days before the row's time.
        event_weights: weight of each event type in the category and brand affinities and in the content profiles
            (item events of every type, module clicks with the weight of `click`).
        devices: devices encoded one-hot (any other device encodes as all zeros).
        coec_prior_clicks: COEC's prior in expected clicks: a module without impressions scores 1, one with many
            more expected clicks than this its clicks / expected clicks.
        slot_prior_impressions: pseudo-impressions shrinking each (device, slot) CTR of a day to the overall CTR
            of the days before it, and that to `prior_ctr`.
        prior_ctr: the CTR assumed before any impression.
        feedback_delay_seconds: impressions (and their clicks) count only from this long before the row's time,
            as logged clicks arrive after their impression; 0 counts every impression strictly before it.
        content_vectors: content-vector columns (`*_embedding`) whose cosine between the module's vector and the
            user's (and the session's) content profile before the row's time are features. The content table must
            hold the column; a profile sums the vectors of the modules clicked and, where the items hold the column
            at the same size, of the items of the item events. A column the content table lacks gives 0, so the
            feature set does not depend on the data.
        content_dims: vectors longer than this are reduced to it by a fixed random projection (seeded by the
            column's name and size, the same for items and modules), so the running profiles stay small.
        shopper_feedback: the user's more-like-this and hide actions on the module before the row's time (the
            validated feedback table, which `graphrec run --input.feedback` fills from the ranking API) are
            features, so the ranker learns what feedback says of later clicks; 0 where there is no feedback.
    """

    windows_days: tuple[int, ...] = (1, 7, 28)
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    devices: tuple[str, ...] = DEVICES
    coec_prior_clicks: float = 5.0
    slot_prior_impressions: float = 100.0
    prior_ctr: float = 0.02
    feedback_delay_seconds: int = 0
    content_vectors: tuple[str, ...] = ("image_embedding", "title_embedding")
    content_dims: int = 32
    shopper_feedback: bool = True

    def __post_init__(self) -> None:
        self.windows_days = tuple(self.windows_days)
        self.devices = tuple(self.devices)
        self.content_vectors = tuple(self.content_vectors)
        check_settings(
            "rank_features",
            self,
            {
                "windows_days": (lambda v: len(v) > 0 and all(positive(d) for d in v), "positive day counts"),
                "event_weights": (
                    lambda v: set(v) == set(EVENT_TYPES) and all(at_least_zero(w) for w in v.values()),
                    f"a non-negative weight for each of {list(EVENT_TYPES)}",
                ),
                "coec_prior_clicks": (positive, "positive"),
                "slot_prior_impressions": (positive, "positive"),
                "prior_ctr": (lambda v: v is not None and 0 < v < 1, "in (0, 1)"),
                "feedback_delay_seconds": (at_least_zero, "zero or more"),
                "content_vectors": (
                    lambda v: all(isinstance(n, str) and n.endswith(VECTOR_SUFFIX) for n in v),
                    "names of *_embedding columns",
                ),
                "content_dims": (positive, "a positive integer"),
            },
        )
