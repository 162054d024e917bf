"""Hyperparameters of the embedding model (no heavy imports, so the command line can show them quickly)."""

from __future__ import annotations

from dataclasses import dataclass, field

from graphrec.errors import at_least_zero, check_settings, positive


@dataclass
class ModelConfig:
    """Hyperparameters of `MultiBehaviourGCN`.

    Args:
        dim: embedding size.
        num_layers: propagation layers (0 = matrix factorisation).
        behaviours: behaviours used for propagation; empty = every behaviour of the task.
        use_features: add catalog feature embeddings to the item inputs.
        use_content: add a learned projection of each content vector (`*_embedding` columns of the catalog: image,
            video, text) to the item inputs, so an item without interactions is placed by its content (needs
            `use_features`).
        content_inputs: which items' layer 0 takes the content-vector projection: `cold` (default), only items
            without a trained id vector (new items, items without training interactions, modules), so interactions
            alone place the warm catalogue and content places what they cannot; `all`, every item, beside its id
            vector (PinSage's way). On the main job's generated shop `all` with MiniLM titles learned 3x slower and
            ended at NDCG@20 0.2164 against 0.2367 for `cold` (benchmarks/results/text_embeddings.md).
        history: add the learned history term to ranking scores.
        conversion: the history term includes the item's conversion rate for items the user touched.
        cooccurrence: the history term includes the item's co-occurrence with the items the user touched (GF-CF's
            normalised item-item filter over every behaviour, with a learned weight; see graphrec.embed.cooccurrence).
        cooccurrence_neighbours: the co-occurrence entries kept per item (the largest).
        init_std: standard deviation of the initial embeddings.
        init: `normal` (N(0, init_std)) or `spectral`: the id embeddings start from the top singular vectors of
            the normalised user-item adjacency (see `spectral_init`), scaled to the normal start's mean norm.
        normalize: L2-normalise the final embeddings and scale them by 1 / sqrt(temperature), so the dot product
            is the cosine divided by the temperature (the form sampled-softmax training wants).
        temperature: that temperature.
    """

    dim: int = 64
    num_layers: int = 3
    behaviours: list[str] = field(default_factory=list)
    use_features: bool = True
    use_content: bool = True
    content_inputs: str = "cold"
    history: bool = True
    conversion: bool = True
    cooccurrence: bool = False
    cooccurrence_neighbours: int = 1000
    init_std: float = 0.1
    init: str = "normal"
    normalize: bool = False
    temperature: float = 0.1

    def __post_init__(self) -> None:
        check_settings(
            "embeddings.model",
            self,
            {
                "dim": (positive, "a positive integer"),
                "num_layers": (at_least_zero, "0 or more"),
                "cooccurrence_neighbours": (positive, "a positive integer"),
                "init_std": (positive, "positive"),
                "init": (lambda v: v in ("normal", "spectral"), "normal or spectral"),
                "content_inputs": (lambda v: v in ("cold", "all"), "cold or all"),
                "temperature": (positive, "positive"),
            },
        )
