"""Settings of the training jobs: optimisation, the evaluation against baselines, and the stage groups that
`graphrec run`, `train`, `evaluate` and `export` share, so a knob has one name in every command.

Plain dataclasses with no heavy imports, so the command line can show them without loading Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphrec.embed.config import ModelConfig
from graphrec.errors import at_least_zero, check_settings, fraction, positive
from graphrec.store.config import ExportConfig, FeatureStoreConfig


@dataclass
class TrainConfig:
    """Optimisation settings.

    Args:
        epochs: maximum epochs.
        batch_size: BPR triples per step.
        lr: Adam learning rate.
        l2: L2 penalty on the layer-0 vectors of each batch (LightGCN's regulariser).
        aux_weight: loss weight of auxiliary-behaviour triples relative to target-behaviour ones.
        aux_ratio: auxiliary triples per target triple in an epoch.
        loss: `bpr` (pairwise) or `softmax`: a sampled softmax over the batch's positives and negatives (each
            user's positive against the other 2B - 1 candidates, corrected by their sampling frequency), which
            gives every positive thousands of negatives per step. Either way, models with a history term add the
            BPR loss of (detached dot product + history term) on the target triples, which trains the history
            weights only.
        logits_dtype: `float32` or `bfloat16`: the precision of the sampled-softmax logits matmul (forward and
            backward), the bulk of a softmax step. bfloat16 makes it about 3x faster on CPUs with AVX512-BF16 or AMX
            (and on GPUs); inputs are rounded to bfloat16, the log q correction and the loss stay in float32.
        fanouts: None (default): every step propagates the whole graph, exact and fast up to a few million
            edges. A list, one entry per layer: every step propagates only the batch's sampled neighbourhood,
            keeping up to that many neighbours per node and hop (-1: all; see `graphrec.graph.sampling`), so a step's
            cost and memory follow the batch, not the graph. Validation and export still propagate the whole
            graph once, without gradients.
        history_negatives: share of target triples whose negative is drawn from the user's own auxiliary-behaviour
            items without the target behaviour (viewed or carted, not bought): these teach the history term the
            ranking within a user's history, where most future purchases are; the embeddings' own BPR loss skips
            them.
        history_lr_scale: learning rate of the history term's weights relative to `lr`.
        min_batches: an epoch has at least this many batches (smaller ones where the data is small), so a small
            shop still gets optimiser steps: with 8192 triples a batch, 5,000 purchases were one step an epoch.
        ema_decay: None (default) or a decay in (0, 1): keep an exponential moving average of the parameters,
            updated after every optimiser step (Lightning's `EMAWeightAveraging`); validation, checkpoints, early
            stopping and the returned model all use the average, the optimiser keeps stepping the raw weights. 0.99
            averages over roughly the last 100 steps. It costs one more copy of the parameters (the copy shares the
            graph) and a pass over them per step.
        eval_every: validate every this many epochs.
        patience: stop after this many validations without improvement of val ndcg@k.
        k: cut-off of the monitored metric.
        seed: seeds parameters and sampling.
        accelerator / devices / strategy: passed to the Lightning Trainer (`strategy="ddp"` for several processes).
    """

    epochs: int = 60
    batch_size: int = 4096
    lr: float = 0.005
    l2: float = 1e-4
    aux_weight: float = 0.3
    aux_ratio: float = 1.0
    history_negatives: float = 0.5
    history_lr_scale: float = 10.0
    min_batches: int = 20
    loss: str = "bpr"
    logits_dtype: str = "float32"
    fanouts: list[int] | None = None
    ema_decay: float | None = None
    eval_every: int = 5
    patience: int = 4
    k: int = 20
    seed: int = 0
    accelerator: str = "cpu"
    devices: int = 1
    strategy: str = "auto"

    def __post_init__(self) -> None:
        check_settings(
            "embeddings.train",
            self,
            {
                "epochs": (positive, "a positive integer"),
                "batch_size": (positive, "a positive integer"),
                "lr": (positive, "positive"),
                "l2": (at_least_zero, "0 or more"),
                "aux_weight": (at_least_zero, "0 or more"),
                "aux_ratio": (at_least_zero, "0 or more"),
                "history_negatives": (fraction, "between 0 and 1"),
                "history_lr_scale": (positive, "positive"),
                "min_batches": (positive, "a positive integer"),
                "loss": (lambda v: v in ("bpr", "softmax"), "bpr or softmax"),
                "logits_dtype": (lambda v: v in ("float32", "bfloat16"), "float32 or bfloat16"),
                "fanouts": (lambda v: v is None or all(f == -1 or f > 0 for f in v), "null or a list of -1 / positive"),
                "ema_decay": (lambda v: v is None or 0 < v < 1, "between 0 and 1 (exclusive) or null"),
                "eval_every": (positive, "a positive integer"),
                "patience": (at_least_zero, "0 or more"),
                "k": (positive, "a positive integer"),
                "devices": (lambda v: v == -1 or v > 0, "a positive integer, or -1 for every device"),
            },
        )


@dataclass
class EvalConfig:
    """What to compare and how to slice.

    Args:
        ks: cut-offs.
        methods: any of popularity, history, item_knn, mf_bpr, lightgcn, graphrec.
        ablations: also train graphrec without auxiliary behaviours and without catalog features.
        cold_user_max_events: users with at most this many training interactions form the cold-user slice.
        knn_neighbours: neighbours kept per item by item-kNN.
    """

    ks: list[int] = field(default_factory=lambda: [10, 20])
    methods: list[str] = field(
        default_factory=lambda: ["popularity", "history", "item_knn", "mf_bpr", "lightgcn", "graphrec"]
    )
    ablations: bool = False
    cold_user_max_events: int = 5
    knn_neighbours: int = 100

    def __post_init__(self) -> None:
        known = ("popularity", "history", "item_knn", "mf_bpr", "lightgcn", "graphrec")
        check_settings(
            "embeddings.evaluation",
            self,
            {
                "ks": (lambda v: bool(v) and all(k > 0 for k in v), "a non-empty list of positive cut-offs"),
                "methods": (lambda v: bool(v) and set(v) <= set(known), f"a non-empty list of {', '.join(known)}"),
                "cold_user_max_events": (at_least_zero, "0 or more"),
                "knn_neighbours": (positive, "a positive integer"),
            },
        )


@dataclass
class EmbeddingStageConfig:
    """The embedding stages: evaluate against baselines on the split, then train on all data (`graphrec run`);
    the same group configures `graphrec train` and `graphrec evaluate`.

    Args:
        enabled: run these stages in `graphrec run` (they need the split).
        target_event: behaviour to predict.
        target_node: item or content.
        model: model hyperparameters.
        train: optimisation settings; in `graphrec run` the final model's epoch count comes from the evaluation.
        evaluation: methods and slices of the evaluation.
        warm_start: start from the model already at the output location (`workdir/model` in `graphrec run`, `--out`
            in `graphrec train`) where there is a compatible one (same target and dimension), so successive
            embedding versions stay in one space (see the export's drift report).
    """

    enabled: bool = True
    target_event: str = "purchase"
    target_node: str = "item"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    warm_start: bool = True


@dataclass
class ExportStageConfig:
    """Publishing a model's embeddings to the store (`graphrec run`'s last stage and every `graphrec export` command).

    Args:
        enabled: run this stage in `graphrec run` (it needs the model stage).
        store: the embedding store directory; it outlives runs (versions accumulate there).
        versions: versioning settings (versions kept, alignment, compatibility threshold).
        feature_store: the Feast online store (SQLite by default, Redis by connection string).
    """

    enabled: bool = True
    store: str = "artifacts/store"
    versions: ExportConfig = field(default_factory=ExportConfig)
    feature_store: FeatureStoreConfig = field(default_factory=FeatureStoreConfig)


@dataclass
class BackfillConfig:
    """Which past cutoffs get an embedding version.

    Args:
        every_days: days between cutoffs.
        first_after_days: days of events the first cutoff follows (a model needs some history).
        cutoffs: explicit cutoffs (ISO times, UTC where no offset is given) instead of the regular ones.
    """

    every_days: int = 7
    first_after_days: int = 7
    cutoffs: list[str] | None = None

    def __post_init__(self) -> None:
        check_settings(
            "backfill",
            self,
            {"every_days": (positive, "a positive integer"), "first_after_days": (positive, "a positive integer")},
        )


@dataclass
class RankTrainConfig:
    """Optimisation of the ranker.

    Args:
        epochs: maximum epochs; training stops early when the validation loss stops improving.
        batch_size: impressions per step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        patience: epochs without a better validation loss before stopping.
        seed: seeds the initialisation and the batch order.
    """

    epochs: int = 20
    batch_size: int = 4096
    lr: float = 0.002
    weight_decay: float = 1e-6
    patience: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        check_settings(
            "ranker.train",
            self,
            {
                "epochs": (positive, "a positive integer"),
                "batch_size": (positive, "a positive integer"),
                "lr": (positive, "positive"),
                "weight_decay": (at_least_zero, "0 or more"),
                "patience": (positive, "a positive integer"),
            },
        )
