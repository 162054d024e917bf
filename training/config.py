"""Settings of the training jobs: optimisation, the evaluation against baselines, and the stage groups that
`graphrec run`, `train`, `evaluate` and `export` share, so a knob has one name in every command.

Plain dataclasses with no heavy imports, so the command line can show them without loading Lightning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from graphrec.embed.config import ModelConfig
from graphrec.errors import at_least_zero, check_settings, fraction, positive
from graphrec.rank.config import RankerConfig, RankFeatureConfig
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
        fanouts: `auto` (default): the whole graph below `sample_above_edges` training edges, sampled
            neighbourhoods of [10, 5, 5, ...] (10 at the first hop, 5 after; one entry per layer) from there on.
            None: every step propagates the whole graph, exact, whatever its size. A list, one entry per layer:
            every step propagates only the batch's sampled neighbourhood, keeping up to that many neighbours per
            node and hop (-1: all; see `graphrec.graph.sampling`), so a step's cost and memory follow the batch, not
            the graph. Validation and export still propagate the whole graph once, without gradients.
        sample_above_edges: with `fanouts: auto`, the training graph's edge count (all behaviours) from which steps
            are sampled. A full-graph step's cost grows with the edges, a sampled one's with the batch's
            neighbourhood, which grows more slowly: measured (benchmarks/results/sampling.md, 2 cores) 0.10 against
            0.14 s a step at 0.48M edges and 2.06 against 0.78 s at 5.1M, so sampling is the faster from about 1M
            edges. The default keeps exact full-graph steps up to 2M edges, where a step still takes under a second
            and where the published benchmarks (taobao-mb at 1.2M, Gowalla) were measured.
        history_negatives: share of target triples whose positive is in the user's auxiliary-behaviour history
            (viewed or carted before) that get their negative from the same history (viewed or carted, not bought):
            these teach the history term the ranking within a user's history, where most future purchases are; the
            embeddings' own BPR loss skips them. Positives from outside the history keep uniform negatives.
        history_lr_scale: learning rate of the history term's weights relative to `lr`.
        history_scales: the scales of the history term against the dot products that each validation tries
            (`dot + s * history`; 0 is the dot product alone, 1 the trained term; both are always tried). The
            trained weights fit training triples, where the dot products' margins keep growing, so the scale that
            ranks held-out items best drifts as training goes on; early stopping follows the best scale of each
            validation and the run keeps the best epoch's scale for ranking (the summary's `history` record).
            The exported embeddings are the dot products either way.
        cold_start_weight: weight of the cold-start loss (models with catalog features or content vectors): the
            same BPR triples scored with each item's feature and content part alone, as an item without
            interactions is embedded, against the (detached) user vectors, so that part learns to place new items
            (DropoutNet's idea, Volkovs et al. NeurIPS 2017: train for the input a cold item will have). 0: off.
        min_batches: an epoch has at least this many batches (smaller ones where the data is small), so a small
            shop still gets optimiser steps: with 8192 triples a batch, 5,000 purchases were one step an epoch.
        ema_decay: None (default) or a decay in (0, 1): keep an exponential moving average of the parameters,
            updated after every optimiser step (Lightning's `EMAWeightAveraging`); validation, checkpoints, early
            stopping and the returned model all use the average, the optimiser keeps stepping the raw weights. 0.99
            averages over roughly the last 100 steps. It costs one more copy of the parameters (the copy shares the
            graph) and a pass over them per step.
        eval_every: validate every this many epochs.
        val_max_users: validation ranks the catalogue for at most this many users with truth (a fixed sample drawn
            once per run with `seed`), so a validation costs the same on a shop of 40k users as on one of 4M; null:
            every user. The same users every epoch, so epochs are compared on equal terms.
        time_budget_minutes: a fit stops after this many minutes (Lightning's `max_time`) and keeps its best
            validated epoch (without validation, the last one); null: no limit. The summary says when it stopped.
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
    history_scales: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    cold_start_weight: float = 1.0
    min_batches: int = 20
    loss: str = "bpr"
    logits_dtype: str = "float32"
    fanouts: list[int] | str | None = "auto"
    sample_above_edges: int = 2_000_000
    ema_decay: float | None = None
    eval_every: int = 5
    val_max_users: int | None = 10_000
    time_budget_minutes: float | None = 30.0
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
                "history_scales": (
                    lambda v: isinstance(v, list) and all(isinstance(x, int | float) and 0 <= x < 1e6 for x in v),
                    "a list of scales of 0 or more",
                ),
                "cold_start_weight": (at_least_zero, "0 or more"),
                "min_batches": (positive, "a positive integer"),
                "loss": (lambda v: v in ("bpr", "softmax"), "bpr or softmax"),
                "logits_dtype": (lambda v: v in ("float32", "bfloat16"), "float32 or bfloat16"),
                "fanouts": (
                    lambda v: v is None or v == "auto" or (isinstance(v, list) and all(f == -1 or f > 0 for f in v)),
                    "auto, null or a list of -1 / positive",
                ),
                "sample_above_edges": (positive, "a positive integer"),
                "ema_decay": (lambda v: v is None or 0 < v < 1, "between 0 and 1 (exclusive) or null"),
                "eval_every": (positive, "a positive integer"),
                "val_max_users": (lambda v: v is None or v > 0, "a positive integer or null"),
                "time_budget_minutes": (lambda v: v is None or v > 0, "positive minutes or null"),
                "patience": (at_least_zero, "0 or more"),
                "k": (positive, "a positive integer"),
                "devices": (lambda v: v == -1 or v > 0, "a positive integer, or -1 for every device"),
            },
        )

    def resolved_fanouts(self, num_layers: int, num_edges: int) -> list[int] | None:
        """The fanouts a fit on a graph of `num_edges` training edges uses: None for full-graph steps."""
        if self.fanouts != "auto":
            return self.fanouts
        if num_layers == 0 or num_edges < self.sample_above_edges:
            return None
        return [10] + [5] * (num_layers - 1)


# Every method `graphrec evaluate` knows: the baselines, the trained models, and the strong baselines tuned on
# validation.
METHODS = ("popularity", "history", "item_knn", "mf_bpr", "lightgcn", "graphrec", "item_knn_tuned", "ease", "gf_cf")


@dataclass
class EvalConfig:
    """What to compare and how to slice.

    Args:
        ks: cut-offs.
        methods: any of popularity, history, item_knn, mf_bpr, lightgcn, graphrec, and the strong baselines whose
            settings are chosen on validation: item_knn_tuned (neighbours, shrinkage, behaviour weights), ease
            (EASE^R) and gf_cf (GF-CF).
        ablations: also train graphrec without auxiliary behaviours, without catalog features and (where the
            catalog has content vectors) without content vectors.
        cold_user_max_events: users with at most this many training interactions form the cold-user slice.
        knn_neighbours: neighbours kept per item by item-kNN.
        tune_max_users: the strong baselines' settings are compared on at most this many validation users (a
            fixed sample), so choosing them costs the same on any shop.
        ease_max_dim: EASE inverts a dense matrix of min(users, items) squared; above this it is skipped, and
            the results say so.
        max_users: the test metrics average over at most this many users with truth (a fixed sample, the same
            for every method and every run of the same split); null takes them all. Scoring the whole catalogue
            for every test user grows with users x items: the main job caps it (conf/default.yaml), the
            benchmarks, whose published protocols rank for every user, do not.
    """

    ks: list[int] = field(default_factory=lambda: [10, 20])
    methods: list[str] = field(
        default_factory=lambda: ["popularity", "history", "item_knn", "mf_bpr", "lightgcn", "graphrec"]
    )
    ablations: bool = False
    cold_user_max_events: int = 5
    knn_neighbours: int = 100
    tune_max_users: int = 5000
    ease_max_dim: int = 15_000
    max_users: int | None = None

    def __post_init__(self) -> None:
        known = METHODS
        check_settings(
            "embeddings.evaluation",
            self,
            {
                "ks": (lambda v: bool(v) and all(k > 0 for k in v), "a non-empty list of positive cut-offs"),
                "methods": (lambda v: bool(v) and set(v) <= set(known), f"a non-empty list of {', '.join(known)}"),
                "cold_user_max_events": (at_least_zero, "0 or more"),
                "knn_neighbours": (positive, "a positive integer"),
                "tune_max_users": (positive, "a positive integer"),
                "ease_max_dim": (positive, "a positive integer"),
                "max_users": (lambda v: v is None or v > 0, "a positive integer or null"),
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
        epochs: epochs per cutoff (each warm-starts from the one before); null: the embeddings' `train.epochs`. In
            `graphrec run` at most the epoch count its evaluation chose.
    """

    every_days: int = 7
    first_after_days: int = 7
    cutoffs: list[str] | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        check_settings(
            "backfill",
            self,
            {
                "every_days": (positive, "a positive integer"),
                "first_after_days": (positive, "a positive integer"),
                "epochs": (lambda v: v is None or (isinstance(v, int) and v > 0), "a positive integer or null"),
            },
        )


@dataclass
class GateConfig:
    """The quality gate of `graphrec run`: the candidate (embedding version, ranker) pair is published only if it is
    not worse than the live pair beyond these tolerances, and clears the floors.

    Args:
        enabled: off publishes every candidate (recorded in the report).
        max_ndcg_drop: largest tolerated drop of the embeddings' test NDCG@20 (absolute) against the live version's.
        max_auc_drop: largest tolerated drop of the ranker's AUC (absolute) against the live ranker's.
        max_logloss_rise: largest tolerated rise of the ranker's logloss, relative (0.02: 2 %).
        max_policy_drop: largest tolerated drop of the expected clicks per request under the click model, relative
            (generated shops only).
        min_holdout_clicks: clicks the rows after the live ranker's data need to compare both rankers on them;
            with fewer, each ranker's own recorded test metrics are compared.
        min_auc: floor of the candidate ranker's test AUC (also for the first pair).
        beat_popularity: the candidate embeddings' test NDCG@20 must be at least the popularity baseline's.
    """

    enabled: bool = True
    max_ndcg_drop: float = 0.01
    max_auc_drop: float = 0.005
    max_logloss_rise: float = 0.02
    max_policy_drop: float = 0.03
    min_holdout_clicks: int = 50
    min_auc: float = 0.55
    beat_popularity: bool = True

    def __post_init__(self) -> None:
        check_settings(
            "gate",
            self,
            {
                "max_ndcg_drop": (at_least_zero, "0 or more"),
                "max_auc_drop": (at_least_zero, "0 or more"),
                "max_logloss_rise": (at_least_zero, "0 or more"),
                "max_policy_drop": (at_least_zero, "0 or more"),
                "min_holdout_clicks": (at_least_zero, "0 or more"),
                "min_auc": (lambda v: v is not None and 0 <= v <= 1, "in [0, 1]"),
            },
        )


@dataclass
class ReloadConfig:
    """Telling a running ranking API to load the pair `graphrec run` just published.

    Args:
        url: the API's base URL (e.g. http://127.0.0.1:8000); null: no API is told (it reloads on its next start).
        token_env: the environment variable holding the API's admin token.
        timeout_s: seconds to wait for the API's answer.
    """

    url: str | None = None
    token_env: str = "GRAPHREC_ADMIN_TOKEN"
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        check_settings("reload", self, {"timeout_s": (positive, "positive")})


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
        average_epochs: the weights validated, checkpointed and kept are an exponential moving average of the
            steps' weights over about this many epochs (0: the last step's own). A fraction of an epoch, so the
            same setting suits logs of any size.
    """

    epochs: int = 20
    batch_size: int = 4096
    lr: float = 0.002
    weight_decay: float = 1e-6
    patience: int = 2
    seed: int = 0
    average_epochs: float = 0.25

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
                "average_epochs": (at_least_zero, "0 or more"),
            },
        )


@dataclass
class RankSplitConfig:
    """The ranker's temporal split of the impressions, by whole days counted back from the last impression.

    Args:
        test_days: the last days, held out for the evaluation (the final ranker trains on them too).
        validation_days: the days before the test days, for early stopping.
        skip_days: first days of impressions left out of training: users and modules have little history there,
            and no embedding version is older than them.
    """

    test_days: int = 7
    validation_days: int = 2
    skip_days: int = 7

    def __post_init__(self) -> None:
        check_settings(
            "ranker.split",
            self,
            {
                "test_days": (positive, "a positive integer"),
                "validation_days": (positive, "a positive integer"),
                "skip_days": (at_least_zero, "0 or more"),
            },
        )


@dataclass
class RankSliceConfig:
    """The evaluation's slices.

    Args:
        cold_user_max_events: rows whose user had at most this many item events and content clicks before the
            impression.
        heavy_user_quantile: rows whose user's item events and content clicks before the impression are at or
            above this quantile of the test rows'.
    """

    cold_user_max_events: int = 2
    heavy_user_quantile: float = 0.9

    def __post_init__(self) -> None:
        check_settings(
            "ranker.slices",
            self,
            {
                "cold_user_max_events": (at_least_zero, "0 or more"),
                "heavy_user_quantile": (lambda v: v is not None and 0 < v < 1, "in (0, 1)"),
            },
        )


@dataclass
class RankerStageConfig:
    """The homepage ranker: point-in-time rows, training, evaluation and its artifact (`graphrec rank` and the
    ranker stages of `graphrec run`).

    Args:
        enabled: run these stages in `graphrec run`.
        embeddings: use the embedding store's versions as inputs (point-in-time: each impression gets the newest
            version whose cutoff is at or before it); off trains on behaviour features alone.
        features: the behaviour features (windows, weights, priors).
        model: the ranker's architecture.
        train: its optimisation.
        split: the temporal split of the evaluation.
        slices: the evaluation's slices.
        final_fit: the published ranker after the evaluation. "update" (the default): the evaluation fit trained
            one epoch more, from its weights, on the days it did not see (validation and test): the newest days
            reach the served ranker at the cost of one pass over them. "retrain": a new ranker trained on every day
            (test days included) for the epoch count the evaluation's early stopping chose (its cost grows with that
            count: four epochs of 15M impressions take 8 minutes on 2 cores). "off": the evaluation fit as it is.
            true and false (earlier configs) read as "retrain" and "off".
        policy_requests: test requests whose every live module is scored to measure the ranker's order with the
            true click model (generated shops only; 0 skips it).
        top_k: slots of the order whose expected clicks are measured.
    """

    enabled: bool = True
    embeddings: bool = True
    features: RankFeatureConfig = field(default_factory=RankFeatureConfig)
    model: RankerConfig = field(default_factory=RankerConfig)
    train: RankTrainConfig = field(default_factory=RankTrainConfig)
    split: RankSplitConfig = field(default_factory=RankSplitConfig)
    slices: RankSliceConfig = field(default_factory=RankSliceConfig)
    final_fit: str | bool = "update"  # booleans: earlier configs (read in __post_init__)
    policy_requests: int = 2000
    top_k: int = 40

    def __post_init__(self) -> None:
        legacy = str(self.final_fit).lower()  # a boolean, or its text from the command line
        if legacy in ("true", "false"):
            self.final_fit = "retrain" if legacy == "true" else "off"
        check_settings(
            "ranker",
            self,
            {
                "final_fit": (lambda v: v in FINAL_FITS, f"one of {', '.join(FINAL_FITS)}"),
                "policy_requests": (at_least_zero, "0 or more"),
                "top_k": (positive, "a positive integer"),
            },
        )


FINAL_FITS = ("update", "retrain", "off")


def _range(low_bound: float, log: bool = False):
    """A rule for a [low, high] search range: two numbers, low <= high, both >= low_bound (> 0 on a log scale)."""

    def ok(value) -> bool:
        return (
            value is not None
            and len(value) == 2
            and value[0] <= value[1]
            and value[0] >= low_bound
            and (not log or value[0] > 0)
        )

    return ok


def _choices(test):
    """A rule for a list of choices: not empty, every choice passing `test`."""
    return lambda value: bool(value) and all(test(v) for v in value)


@dataclass
class RankerSearchSpace:
    """The ranker's search space in `graphrec tune --target ranker`: each trial sets these keys of the `ranker`
    group and keeps the rest as given. A range is [low, high] (both included); a list of one choice, or a range with
    low = high, fixes the key.

    Args:
        cross_layers: range of `ranker.model.cross_layers`: 0 (the deep tower alone) to 3 DCN-v2 cross layers.
        hidden: choices of `ranker.model.hidden`, the deep tower's widths.
        dropout: range of `ranker.model.dropout`.
        lr: range of `ranker.train.lr`, drawn on a log scale.
        weight_decay: range of `ranker.train.weight_decay`, drawn on a log scale.
        batch_size: choices of `ranker.train.batch_size`.
    """

    cross_layers: list[int] = field(default_factory=lambda: [0, 3])
    hidden: list[list[int]] = field(default_factory=lambda: [[64], [128, 64], [256, 128]])
    dropout: list[float] = field(default_factory=lambda: [0.0, 0.3])
    lr: list[float] = field(default_factory=lambda: [3e-4, 1e-2])
    weight_decay: list[float] = field(default_factory=lambda: [1e-7, 1e-3])
    batch_size: list[int] = field(default_factory=lambda: [1024, 2048, 4096, 8192])

    def __post_init__(self) -> None:
        check_settings(
            "tune.ranker_space",
            self,
            {
                "cross_layers": (_range(0), "a range [low, high] of 0 or more"),
                "hidden": (_choices(lambda h: bool(h) and all(w > 0 for w in h)), "a list of lists of positive widths"),
                "dropout": (lambda v: _range(0)(v) and v[1] < 1, "a range [low, high] in [0, 1)"),
                "lr": (_range(0, log=True), "a positive range [low, high]"),
                "weight_decay": (_range(0, log=True), "a positive range [low, high] (drawn on a log scale)"),
                "batch_size": (_choices(positive), "a list of positive sizes"),
            },
        )


@dataclass
class EmbeddingSearchSpace:
    """The embeddings' search space in `graphrec tune --target embeddings`: each trial sets these keys of the
    `embeddings` group and keeps the rest as given. A range is [low, high] (both included); a list of one choice,
    or a range with low = high, fixes the key.

    Args:
        dim: choices of `embeddings.model.dim`.
        num_layers: range of `embeddings.model.num_layers` (propagation layers).
        lr: range of `embeddings.train.lr`, drawn on a log scale.
        l2: range of `embeddings.train.l2`, drawn on a log scale.
        aux_weight: range of `embeddings.train.aux_weight` (0: the target behaviour alone).
    """

    dim: list[int] = field(default_factory=lambda: [32, 64, 128])
    num_layers: list[int] = field(default_factory=lambda: [1, 3])
    lr: list[float] = field(default_factory=lambda: [1e-3, 3e-2])
    l2: list[float] = field(default_factory=lambda: [1e-6, 1e-2])
    aux_weight: list[float] = field(default_factory=lambda: [0.0, 1.0])

    def __post_init__(self) -> None:
        check_settings(
            "tune.embeddings_space",
            self,
            {
                "dim": (_choices(positive), "a list of positive dimensions"),
                "num_layers": (_range(0), "a range [low, high] of 0 or more"),
                "lr": (_range(0, log=True), "a positive range [low, high]"),
                "l2": (_range(0, log=True), "a positive range [low, high] (drawn on a log scale)"),
                "aux_weight": (_range(0), "a range [low, high] of 0 or more"),
            },
        )


@dataclass
class TuneConfig:
    """Hyperparameter search with Optuna (`graphrec tune`): a study per target, kept in SQLite so that a killed
    search continues where it stopped.

    Args:
        n_trials: complete trials the study holds when the search ends, counted over every run of it (pruned and
            failed trials do not count), so a rerun after a kill continues and a rerun after the end does nothing.
        seed: seeds the sampler (TPE); trial k's draw depends only on the seed and the trials before it, so a study
            is reproducible, also across a kill. Training itself is seeded by the target's `train.seed`.
        timeout_minutes: start no new trial after this many minutes of this run (null: no limit); a rerun goes on.
        pruner_warmup_epochs: a trial is never pruned in its first this many epochs (median pruning on the
            per-epoch validation metric after that).
        pruner_startup_trials: no trial is pruned before this many trials of the study are complete.
        workdir: holds the studies (`study.db`, SQLite, one study per target) and each running trial's scratch
            directory.
        out: the tuned YAML, the target group with the best trial's values (default `conf/tuned/<target>.yaml`);
            the study's trials (`<name>.trials.csv`) and plots (`<name>.history.png`, `<name>.importance.png`) are
            written beside it.
        ranker_space: the ranker's search space.
        embeddings_space: the embeddings' search space.
    """

    n_trials: int = 20
    seed: int = 0
    timeout_minutes: float | None = None
    pruner_warmup_epochs: int = 2
    pruner_startup_trials: int = 3
    workdir: str = "artifacts/tune"
    out: str | None = None
    ranker_space: RankerSearchSpace = field(default_factory=RankerSearchSpace)
    embeddings_space: EmbeddingSearchSpace = field(default_factory=EmbeddingSearchSpace)

    def __post_init__(self) -> None:
        check_settings(
            "tune",
            self,
            {
                "n_trials": (positive, "a positive integer"),
                "timeout_minutes": (lambda v: v is None or v > 0, "positive or null"),
                "pruner_warmup_epochs": (at_least_zero, "0 or more"),
                "pruner_startup_trials": (at_least_zero, "0 or more"),
                "workdir": (bool, "a directory"),
                "out": (lambda v: v is None or v.endswith((".yaml", ".yml")), "null or a path ending in .yaml"),
            },
        )
