"""The homepage ranker's uplift harness: six rankers on the same point-in-time rows, 5 seeds each, and their orders'
policy value under the generated shop's true click model beside the off-policy estimates of it.

On a generated shop (`--events`, default 500k): embedding versions are backfilled weekly twice, once with the GNN
(the default recipe) and once with matrix factorisation (the same trainer with 0 layers, no catalog features, no
history term); every impression becomes a training row with behaviour features from strictly earlier events and
the embeddings of the version live at its time. Rankers, trained on the days after the first week, early-stopped on
the next 2 days and tested on the last 7:
  (i)   basic: context and module statistics only (no user signal, no embeddings);
  (ii)  hand_made: every behaviour feature (the user's history, affinities, the session, fatigue), no embeddings;
  (iii) mf: basic + MF embeddings;
  (iv)  gnn: basic + GNN embeddings;
  (v)   gnn+hand_made: every behaviour feature + GNN embeddings;
  (vi)  lightgbm: gradient-boosted trees over the inputs of (v) (embeddings as columns, their dot product, the
        slot and device as features; scored at slot 0 for the orders).
Metrics on the test days: AUC, logloss, GAUC, NDCG@10, ECE of P(click) at the logged slot, overall and for cold
users, heavy users and modules launched after the embedding cutoff; the oracle's (true P(click)) beside them. Policy
value: expected clicks per request of each ranker's top-40 order on a sample of test requests (every live module
scored), with the first-slot IPS / SNIPS estimates, against the oracle, the logging policy and popularity.

Content ablation (`--dataset content`, its own section): hand_made and gnn+hand_made, each with and without content
(GNN versions backfilled without the content-vector projection, the ranker without the content-similarity
features), AUC overall and on new and warm modules.

Run: python benchmarks/ranker.py [--events 500000] [--seeds 5] [--workdir benchmarks/work/ranker]
Writes benchmarks/results/ranker.{md,json}. The shop, the backfills and the rows are cached in the workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO, machine, write_results

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(os.environ.get("GRAPHREC_SHARED_DATA", REPO.parent / "shared" / "data"))
GOALS = {"oracle_auc_ratio": 0.97, "ece_below": 0.01, "policy_ratio": 0.9, "lift_sigmas": 3.0}
ARMS = ("basic", "hand_made", "mf", "gnn", "gnn+hand_made", "lightgbm")
CONTEXT = ("hour_sin", "hour_cos", "weekday")
SLICES = ("overall", "cold_users", "heavy_users", "new_modules", "warm_modules")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_shop(workdir: Path, events: int, seed: int) -> Path:
    """Generate and validate the benchmark shop once; returns the validated directory."""
    from graphrec.data.config import ShopConfig, ValidationConfig
    from graphrec.data.shop import generate_shop, write_shop
    from graphrec.data.validation import validate_dataset

    shop_dir, validated = workdir / "shop", workdir / "validated"
    if not (shop_dir / "click_model.npz").exists():
        log(f"generating a {events:,}-event shop")
        shop = generate_shop(ShopConfig.scaled_to(events, seed=seed))
        write_shop(shop, shop_dir)
    if not (validated / "report.json").exists():
        import polars as pl

        tables = {n: pl.read_parquet(shop_dir / f"{n}.parquet") for n in ("events", "items", "content", "impressions")}
        validate_dataset(tables, validated, ValidationConfig(reference_time="2100-01-01"))
    return validated


def backfill(
    workdir: Path, validated: Path, kind: str, epochs: int, every_days: int = 7, **stage
) -> tuple[Path, float]:
    """Embedding versions of `kind` (gnn or mf) every `every_days` in their own store (`stage`: more settings of
    the embedding stage, e.g. the target); returns the store and the seconds (about 0 when already there)."""
    from graphrec.embed.config import ModelConfig
    from training.backfill import backfill_job
    from training.config import BackfillConfig, EmbeddingStageConfig, ExportStageConfig, TrainConfig

    store = workdir / f"store_{kind}"
    models = {
        "gnn": ModelConfig(),
        "gnn_no_content": ModelConfig(use_content=False),
        "mf": ModelConfig(num_layers=0, use_features=False, history=False),
    }
    model = models[kind]
    embeddings = EmbeddingStageConfig(model=model, train=TrainConfig(epochs=epochs), **stage)
    started = time.perf_counter()
    log(f"backfilling {kind} versions into {store}")
    export = ExportStageConfig(store=str(store))
    cutoffs = BackfillConfig(every_days=every_days, first_after_days=every_days)
    backfill_job(validated, workdir / f"backfill_{kind}", cutoffs, None, embeddings, export)
    return store, time.perf_counter() - started


def build_frames(workdir: Path, validated: Path, stores: dict[str, Path]):
    """Rows with features (once) and each store's embeddings; cached as Parquet."""
    import polars as pl

    from graphrec.artifacts import code_version
    from graphrec.rank.rows import EMBEDDING_FLAGS, RankRows, impression_rows, with_embeddings
    from graphrec.store.versions import list_versions

    # The cached rows are reused only if the same code built them from the same embedding versions.
    made_by = {"code": code_version(), "stores": {kind: list_versions(store) for kind, store in stores.items()}}
    meta = workdir / "rows_meta.json"
    if not meta.exists() or json.loads(meta.read_text()) != json.loads(json.dumps(made_by)):
        for stale in workdir.glob("rows_*"):
            stale.unlink()
    rows = {}
    base_path = workdir / "rows_base.parquet"
    if base_path.exists():
        base = pl.read_parquet(base_path).rechunk()  # one chunk per column: RankRows reads its buffers in place
        names = json.loads((workdir / "rows_features.json").read_text())
    else:
        log("building point-in-time rows")
        built = impression_rows(validated)
        base, names = built.frame, built.feature_names
        base.write_parquet(base_path)
        (workdir / "rows_features.json").write_text(json.dumps(names))
    rows["none"] = RankRows(base, names)
    for kind, store in stores.items():
        path, tables = workdir / f"rows_{kind}.parquet", workdir / f"rows_{kind}_vectors.npz"
        if path.exists() and tables.exists():
            frame = pl.read_parquet(path).rechunk()
            with np.load(tables) as saved:
                vectors = {side: saved[side] for side in ("user", "module")}
        else:
            log(f"joining {kind} embeddings point-in-time")
            frame, vectors = with_embeddings(base, store, None)
            frame.write_parquet(path)
            np.savez(tables, **vectors)
        rows[kind] = RankRows(frame, [*names, *EMBEDDING_FLAGS], vectors)
    meta.write_text(json.dumps(made_by))
    return rows


def arm_inputs(rows, names: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Each neural arm's (rows key, features)."""
    from graphrec.rank.rows import EMBEDDING_FLAGS

    basic = [n for n in names if n.startswith("module_") or n in CONTEXT or n.startswith("device_")]
    flags = list(EMBEDDING_FLAGS)
    return {
        "basic": ("none", basic),
        "hand_made": ("none", names),
        "mf": ("mf", basic + flags),
        "gnn": ("gnn", basic + flags),
        "gnn+hand_made": ("gnn", names + flags),
    }


def lightgbm_matrix(arrays: dict, slot_zero: bool = False) -> np.ndarray:
    """LightGBM's input: the dense features, both embeddings, their dot product, slot and device."""
    user, module = np.asarray(arrays["user"]), np.asarray(arrays["module"])
    parts = [arrays["dense"], user, module, (user * module).sum(1, keepdims=True)]
    slot = np.zeros_like(arrays["slot"]) if slot_zero else arrays["slot"]
    parts += [slot[:, None].astype(np.float32), arrays["device"][:, None].astype(np.float32)]
    return np.concatenate(parts, axis=1)


def fit_lightgbm(train: dict, validation: dict, seed: int):
    import lightgbm as lgb

    params = {
        "objective": "binary",
        "learning_rate": 0.05,
        "num_leaves": 63,
        "min_data_in_leaf": 200,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,  # LightGBM's deterministic mode asks for a fixed histogram layout
        "num_threads": 2,
        "verbose": -1,
    }
    dim = train["user"].shape[1]
    n_dense = train["dense"].shape[1]
    categorical = [n_dense + 2 * dim + 2]  # device
    data = lgb.Dataset(lightgbm_matrix(train), train["clicked"], categorical_feature=categorical, free_raw_data=True)
    valid = lgb.Dataset(lightgbm_matrix(validation), validation["clicked"], reference=data)
    booster = lgb.train(
        params, data, num_boost_round=2000, valid_sets=[valid], callbacks=[lgb.early_stopping(50, verbose=False)]
    )
    return booster


def evaluate_scores(click: np.ndarray, arrays: dict, masks: dict[str, np.ndarray]) -> dict:
    from graphrec.rank.metrics import click_metrics

    out = {"overall": click_metrics(click, arrays["clicked"], arrays["user_id"], arrays["request"])}
    for name, mask in masks.items():
        out[name] = click_metrics(
            click[mask], arrays["clicked"][mask], arrays["user_id"][mask], arrays["request"][mask]
        )
    return out


def oracle_scores(model, frame) -> np.ndarray:
    """True P(click) of logged rows: P(examine | slot) x P(relevant)."""
    requests = model.request_index(frame["request_id"].to_numpy())
    modules = model.module_index(frame["content_id"].to_numpy())
    return model.relevance(requests, modules) * model.examination(requests, frame["slot"].to_numpy())


def train_arms(args, workdir: Path, rows: dict, parts: dict, masks: dict, candidates=None, policy=None) -> dict:
    """Every arm of `args.arms` (that the rows support) for each seed: test metrics overall and per slice, and with
    `candidates` / `policy` the policy value of its order."""
    from training.config import RankerStageConfig, RankTrainConfig
    from training.rank_job import fit_split
    from training.rank_system import predict

    test = parts["test"]
    inputs = arm_inputs(rows, rows["none"].feature_names)
    arms = [a for a in ARMS if a in args.arms and (a == "lightgbm" or inputs[a][0] in rows)]
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    mean_click: dict[str, np.ndarray] = {}
    for seed in range(args.seeds):
        for arm in arms:
            t0 = time.perf_counter()
            model, scores = None, None
            if arm == "lightgbm":
                key, features = "gnn", inputs["gnn+hand_made"][1]
                r = rows[key]
                booster = fit_lightgbm(
                    r.arrays(parts["train"], True, features), r.arrays(parts["validation"], True, features), seed
                )
                arrays = r.arrays(test, True, features)
                click = booster.predict(lightgbm_matrix(arrays))
                if candidates is not None:
                    grid_arrays = candidates[key].arrays(None, True, features)
                    scores = booster.predict(lightgbm_matrix(grid_arrays, slot_zero=True))
                summary = {"trees": booster.best_iteration}
            else:
                key, features = inputs[arm]
                r = rows[key]
                use = key != "none"
                seeded = RankerStageConfig(train=RankTrainConfig(epochs=args.epochs, seed=seed))
                model, summary = fit_split(r, parts, seeded, workdir / "ckpt" / arm, features=features, embeddings=use)
                arrays = r.arrays(test, use, features)
                _, click = predict(model, arrays)
                if candidates is not None:
                    scores, _ = predict(model, candidates[key].arrays(None, use, features))
                summary = {k: summary[k] for k in ("epochs_run", "best_epoch") if k in summary}
            metrics = evaluate_scores(click, arrays, masks)
            mean_click[arm] = mean_click.get(arm, 0.0) + np.asarray(click, dtype=np.float64) / args.seeds
            run = {"seed": seed, "metrics": metrics, "training": summary}
            note = ""
            if policy is not None:
                run["policy"] = policy(arm, model, scores)
                note = f" policy {run['policy']['ratio_to_oracle']:.3f}"
            run["seconds"] = time.perf_counter() - t0
            results[arm].append(run)
            o = metrics["overall"]
            log(
                f"seed {seed} {arm}: AUC {o['auc']:.4f} GAUC {o['gauc']:.4f} logloss {o['logloss']:.5f} "
                f"ECE {o['ece']:.4f}{note} ({run['seconds']:.0f}s)"
            )
    return results, mean_click


def paired_bootstrap(
    scores: dict[str, np.ndarray], arrays: dict, masks: dict, base: str = "hand_made", rounds: int = 200
) -> dict:
    """The AUC lift of the seed-averaged predictions of gnn and gnn+hand_made over `base`, overall and on cold
    users, with its standard deviation over `rounds` bootstrap resamples of the test requests (the same resample
    for both rankers: a paired test of the difference on this test set; the seeds' spread is reported beside)."""
    from graphrec.rank.metrics import auc

    out: dict = {}
    if base not in scores:
        return out
    everything = np.ones(len(arrays["clicked"]), dtype=bool)
    for arm in ("gnn", "gnn+hand_made"):
        if arm not in scores:
            continue
        out[arm] = {}
        for part, mask in (("overall", everything), ("cold_users", masks["cold_users"])):
            a, b, y, groups = scores[arm][mask], scores[base][mask], arrays["clicked"][mask], arrays["request"][mask]
            order = np.argsort(groups, kind="stable")
            sorted_groups = groups[order]
            starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
            lengths = np.diff(np.r_[starts, len(order)])
            rng = np.random.default_rng(0)
            diffs = []
            for _ in range(rounds):
                pick = rng.integers(0, len(starts), len(starts))
                n = lengths[pick]
                offsets = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
                rows = order[np.repeat(starts[pick], n) + offsets]
                diffs.append(auc(a[rows], y[rows]) - auc(b[rows], y[rows]))
            lift = auc(a, y) - auc(b, y)
            sd = float(np.std(diffs, ddof=1))
            out[arm][part] = {
                "auc_lift": float(lift),
                "bootstrap_sd": sd,
                "ci95": [float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))],
                "sigmas": float(lift / sd) if sd > 0 else float("nan"),
                "rounds": rounds,
            }
    return out


def run_mind(args, workdir: Path) -> dict:
    """MIND-small: news as modules, the users' click history as events; daily GNN versions (target: clicks on
    news); train on the days after the first, early-stop on the fourth, test on the last."""
    from graphrec.artifacts import fingerprint_inputs
    from graphrec.data.adapters import open_dataset
    from graphrec.data.config import ValidationConfig
    from graphrec.data.validation import validate_dataset
    from graphrec.rank.metrics import click_metrics
    from training.config import RankerStageConfig, RankSplitConfig
    from training.rank_job import slice_masks, split_rows

    root = SHARED / "mind-small"
    if not root.exists():
        log(f"MIND skipped: {root} not found (set GRAPHREC_SHARED_DATA)")
        return {"skipped": f"{root.name} not found"}
    started = time.perf_counter()
    validated = workdir / "validated"
    if not (validated / "report.json").exists():
        tables, sources, _ = open_dataset("mind", root)
        validate_dataset(tables, validated, ValidationConfig(), fingerprint_inputs(dict(sources)))
    store, seconds = backfill(
        workdir, validated, "gnn", args.embedding_epochs, every_days=1, target_event="click", target_node="content"
    )
    rows = build_frames(workdir, validated, {"gnn": store})
    split = RankSplitConfig(test_days=1, validation_days=1, skip_days=1)
    parts = split_rows(rows["gnn"], split)
    test = parts["test"]
    masks = slice_masks(rows["gnn"], test, RankerStageConfig(split=split))
    frame = rows["gnn"].frame[test]
    reference = rows["gnn"].arrays(test, False, [])
    popularity = frame["module_clicks"].to_numpy() + 1e-3 * frame["module_coec"].to_numpy()
    baselines = {
        "popularity (the news' clicks before the impression)": click_metrics(
            popularity, reference["clicked"], reference["user_id"], reference["request"]
        ),
        "display position alone": click_metrics(
            -frame["slot"].to_numpy().astype(float), reference["clicked"], reference["user_id"], reference["request"]
        ),
    }
    results, mean_click = train_arms(args, workdir, rows, parts, masks)
    bootstrap = paired_bootstrap(mean_click, reference, masks)
    whole = rows["none"].frame
    return {
        "data": {
            "impressions": whole.height,
            "clicks": int(whole["clicked"].sum()),
            "requests": whole["request_id"].n_unique(),
            "rows": {k: len(v) for k, v in parts.items()},
            "test_rows_with_user_embedding": float(frame["has_user_embedding"].mean()),
            "test_rows_with_module_embedding": float(frame["has_module_embedding"].mean()),
        },
        "backfill_seconds": seconds,
        "baselines": baselines,
        "arms": results,
        "bootstrap": bootstrap,
        "slice_sizes": {name: int(mask.sum()) for name, mask in masks.items()},
        "seconds": time.perf_counter() - started,
    }


def content_feature_names(names: list[str]) -> list[str]:
    """The ranker features that read content vectors (the similarity of a module's vectors to the user's and the
    session's profiles)."""
    from graphrec.data.config import VECTOR_SUFFIX
    from graphrec.rank.config import RankFeatureConfig

    kinds = [name.removesuffix(VECTOR_SUFFIX) for name in RankFeatureConfig().content_vectors]
    return [n for n in names if n in {f"{owner}_{kind}_similarity" for owner in ("user", "session") for kind in kinds}]


def run_content(args, workdir: Path, validated: Path, store_options: dict, split) -> dict:
    """The content ablation on one dataset: hand-made features and GNN + hand-made, each with and without content
    (the GNN backfilled with and without its content-vector projection; the ranker with and without the
    content-similarity features), AUC overall and on new and warm modules."""
    from graphrec.rank.rows import EMBEDDING_FLAGS
    from training.config import RankerStageConfig, RankTrainConfig
    from training.rank_job import fit_split, slice_masks, split_rows
    from training.rank_system import predict

    started = time.perf_counter()
    stores, seconds = {}, {}
    for kind in ("gnn", "gnn_no_content"):
        stores[kind], seconds[kind] = backfill(workdir, validated, kind, args.embedding_epochs, **store_options)
    rows = build_frames(workdir, validated, stores)
    names = rows["none"].feature_names
    content = content_feature_names(names)
    plain = [n for n in names if n not in content]
    flags = list(EMBEDDING_FLAGS)
    arms = {
        "hand_made": ("none", names),
        "hand_made without content": ("none", plain),
        "gnn+hand_made": ("gnn", names + flags),
        "gnn+hand_made without content": ("gnn_no_content", plain + flags),
    }
    config = RankerStageConfig(split=split, train=RankTrainConfig(epochs=args.epochs))
    parts = split_rows(rows["gnn"], config.split)
    test = parts["test"]
    masks = slice_masks(rows["gnn"], test, config)
    results: dict[str, list[dict]] = {arm: [] for arm in arms}
    for seed in range(args.seeds):
        for arm, (key, features) in arms.items():
            t0 = time.perf_counter()
            r, use = rows[key], key != "none"
            seeded = replace(config, train=replace(config.train, seed=seed))
            model, summary = fit_split(r, parts, seeded, workdir / "ckpt" / arm, features=features, embeddings=use)
            arrays = r.arrays(test, use, features)
            _, click = predict(model, arrays)
            metrics = evaluate_scores(click, arrays, masks)
            training = {k: summary[k] for k in ("epochs_run", "best_epoch") if k in summary}
            results[arm].append(
                {"seed": seed, "metrics": metrics, "training": training, "seconds": time.perf_counter() - t0}
            )
            log(
                f"seed {seed} {arm}: AUC {metrics['overall']['auc']:.4f}, new modules "
                f"{metrics['new_modules']['auc']:.4f}, warm modules {metrics['warm_modules']['auc']:.4f}"
            )
    frame = rows["gnn"].frame[test]
    return {
        "content_features": content,
        "vectors": {
            table: [c for c in cols if c.endswith("_embedding")] for table, cols in _vector_columns(validated).items()
        },
        "backfill_seconds": seconds,
        "arms": results,
        "summary": summarise_arms(results),
        "slice_sizes": {name: int(mask.sum()) for name, mask in masks.items()},
        "test_rows": len(test),
        "test_rows_with_module_embedding": float(frame["has_module_embedding"].mean()),
        "seconds": time.perf_counter() - started,
    }


def _vector_columns(validated: Path) -> dict[str, list[str]]:
    import polars as pl

    return {
        table: list(pl.read_parquet_schema(validated / f"{table}.parquet"))
        for table in ("items", "content")
        if (validated / f"{table}.parquet").exists()
    }


def run_generated_content(args, workdir: Path) -> dict:
    """The content ablation on the generated shop (its items and modules carry image vectors and titles)."""
    from training.config import RankSplitConfig

    validated = prepare_shop(workdir, args.events, args.shop_seed)
    return run_content(args, workdir, validated, {}, RankSplitConfig())


def run_mind_content(args, workdir: Path) -> dict:
    """The content ablation on MIND-small: news titles encoded by the packaged MiniLM as the news' content vectors;
    daily GNN versions trained on clicks of news; the split of the MIND section."""
    from graphrec.artifacts import fingerprint_inputs
    from graphrec.data.adapters import open_dataset
    from graphrec.data.config import TextEncoderConfig, ValidationConfig
    from graphrec.data.validation import validate_dataset
    from training.config import RankSplitConfig

    root = SHARED / "mind-small"
    if not root.exists():
        log(f"MIND skipped: {root} not found (set GRAPHREC_SHARED_DATA)")
        return {"skipped": f"{root.name} not found"}
    validated = workdir / "validated"
    if not (validated / "report.json").exists():
        log("validating MIND with title vectors")
        tables, sources, _ = open_dataset("mind", root)
        text = TextEncoderConfig(enabled=True, cache_dir=str(workdir / "text_cache"))
        validate_dataset(tables, validated, ValidationConfig(text=text), fingerprint_inputs(dict(sources)))
    import polars as pl

    news = pl.read_parquet(validated / "content.parquet")
    titled = news.filter(pl.col("title_embedding").is_not_null()).height if "title_embedding" in news.columns else 0
    options = {"every_days": 1, "target_event": "click", "target_node": "content"}
    split = RankSplitConfig(test_days=1, validation_days=1, skip_days=1)
    result = run_content(args, workdir, validated, options, split)
    result["note"] = f"{titled:,} of {news.height:,} news have a title in this copy's news.tsv" + (
        ", so the others carry no title vector: the ablation can only move the rows of titled news."
        if titled < news.height
        else "."
    )
    return result


def run_generated(args, workdir: Path) -> dict:
    from graphrec.data.homepage import ClickModel
    from graphrec.rank.policy import policy_setting, policy_table
    from training.config import RankerStageConfig, RankTrainConfig
    from training.rank_job import slice_masks, split_rows, tower_theta

    started = time.perf_counter()
    validated = prepare_shop(workdir, args.events, args.shop_seed)
    click_model = ClickModel.load(workdir / "shop" / "click_model.npz")
    stores, backfill_seconds = {}, {}
    for kind in ("gnn", "mf"):
        stores[kind], backfill_seconds[kind] = backfill(workdir, validated, kind, args.embedding_epochs)
    rows = build_frames(workdir, validated, stores)
    config = RankerStageConfig(
        train=RankTrainConfig(epochs=args.epochs), top_k=40, policy_requests=args.policy_requests
    )
    parts = split_rows(rows["gnn"], config.split)
    test = parts["test"]
    masks = slice_masks(rows["gnn"], test, config)
    test_frame = rows["gnn"].frame[test]
    oracle = oracle_scores(click_model, test_frame)
    reference = rows["gnn"].arrays(test, False, [])
    oracle_metrics = evaluate_scores(oracle, reference, masks)
    log(f"oracle test AUC {oracle_metrics['overall']['auc']:.4f} on {len(test):,} impressions")

    log(f"policy setting: {args.policy_requests} test requests, every live module")
    setting = policy_setting(
        validated, click_model, test_frame["request_id"].to_numpy(), config.features, args.policy_requests
    )
    candidates = {"none": setting.rows()}
    for kind, store in stores.items():
        candidates[kind] = setting.rows(store)
    state = {"theta": click_model.examination_curve(config.top_k), "learned": False}

    def policy(arm: str, model, candidate_scores: np.ndarray) -> dict:
        if model is not None and not state["learned"]:  # the off-policy estimates use the first position tower
            state["theta"], state["learned"] = tower_theta(model, config.top_k), True
        return policy_table(setting, {arm: candidate_scores}, state["theta"], config.top_k, references=False)[arm]

    results, mean_click = train_arms(args, workdir, rows, parts, masks, candidates, policy)
    log("paired bootstrap of the embedding arms' AUC lift over hand_made")
    bootstrap = paired_bootstrap(mean_click, reference, masks)
    theta = state["theta"]
    references = policy_table(setting, {}, theta, config.top_k)
    return {
        "shop": {
            "events": args.events,
            "seed": args.shop_seed,
            "impressions": rows["none"].frame.height,
            "clicks": int(rows["none"].frame["clicked"].sum()),
            "rows": {k: len(v) for k, v in parts.items()},
            "train_clicks": int(rows["none"].frame["clicked"].gather(parts["train"]).sum()),
        },
        "backfill_seconds": backfill_seconds,
        "oracle": oracle_metrics,
        "arms": results,
        "references": references,
        "bootstrap": bootstrap,
        "policy_requests": len(setting.requests),
        "seconds": time.perf_counter() - started,
    }


def _mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)), float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0


def summarise_arms(arms: dict) -> dict:
    """Mean and std over seeds of each arm's metrics (every slice) and, where measured, its policy value."""
    table = {}
    for arm, runs in arms.items():
        if not runs:
            continue
        row = {}
        for part in SLICES:
            for metric in ("auc", "logloss", "gauc", "ndcg@10", "ece"):
                if part in runs[0]["metrics"]:  # runs from before a slice existed lack it
                    row[f"{part}.{metric}"] = _mean_std([r["metrics"][part][metric] for r in runs])
        if "policy" in runs[0]:
            for metric in ("expected_clicks", "ratio_to_oracle", "ips", "snips"):
                row[f"policy.{metric}"] = _mean_std([r["policy"][metric] for r in runs])
        table[arm] = row
    return table


def summarise(section: dict) -> dict:
    """`summarise_arms`, the ratios to the oracle's AUC and the lifts over hand_made."""
    oracle_auc = section["oracle"]["overall"]["auc"]
    table = summarise_arms(section["arms"])
    for row in table.values():
        row["oracle_auc_ratio"] = row["overall.auc"][0] / oracle_auc
    lifts = {}
    if "hand_made" in table:
        for arm in ("gnn", "gnn+hand_made"):
            if arm not in table:
                continue
            lifts[arm] = {}
            for part in ("overall", "cold_users"):
                (m, s), (m0, s0) = table[arm][f"{part}.auc"], table["hand_made"][f"{part}.auc"]
                pooled = float(np.sqrt((s**2 + s0**2) / 2)) or float("nan")
                lifts[arm][part] = {"auc_lift": m - m0, "pooled_std": pooled, "sigmas": (m - m0) / pooled}
    return {"arms": table, "lifts": lifts}


def _machine_line(m: dict) -> str:
    return (
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB; torch {m['torch']}, "
        f"polars {m['polars']}."
    )


def markdown(payload: dict) -> list[str]:
    lines = [
        "# Homepage ranker: uplift harness, policy value and MIND",
        "",
        f"{_machine_line(payload['machine'])} Embeddings are one backfill per section; the seeds vary the rankers' "
        "initialisation and batch order.",
        "",
    ]
    if "generated" in payload:
        lines += generated_markdown(payload)
    if "mind" in payload:
        lines += mind_markdown(payload)
    if "content" in payload:
        lines += content_markdown(payload["content"])
    return lines


CONTENT_TITLES = {
    "generated": "the generated shop (items and modules carry 32-dimensional image vectors)",
    "mind": "MIND-small (news titles encoded by the packaged MiniLM)",
}


def content_markdown(content: dict) -> list[str]:
    """The content ablation: each arm with and without content, AUC overall and on new and warm modules."""
    lines = [
        "## Content features: with and without",
        "",
        "Without content: the GNN versions are backfilled with `use_content: false` (no content-vector projection) "
        "and the ranker drops the content-similarity features; everything else is equal. New modules launched at "
        "or after the cutoff of the embedding version live at the impression; warm modules are the others. Goal: "
        "new-module AUC within 0.05 of warm modules'.",
        "",
    ]
    for dataset, section in content.items():
        if not isinstance(section, dict) or "summary" not in section:
            continue
        sizes = ", ".join(f"{k} {v:,}" for k, v in section["slice_sizes"].items())
        lines += [
            f"### {CONTENT_TITLES.get(dataset, dataset)}",
            "",
            f"Command: `{section['command']}`",
            "",
            *([_machine_line(section["machine"]), ""] if section.get("machine") else []),
            *([section["note"], ""] if section.get("note") else []),
            f"Content features: {', '.join(section['content_features']) or 'none'}; vector columns "
            f"{json.dumps(section['vectors'])}. Test rows {section['test_rows']:,} ({sizes}); "
            f"{section['test_rows_with_module_embedding']:.0%} with a module embedding. Backfills "
            + ", ".join(f"{k} {v:.0f} s" for k, v in section["backfill_seconds"].items())
            + f"; {section['seeds']} seeds; {section['seconds'] / 60:.0f} min in all.",
            "",
            "| ranker | AUC | new modules | warm modules | new - warm |",
            "|---|---|---|---|---|",
        ]
        for arm, row in section["summary"].items():
            cell = _cells(row)
            gap = row["new_modules.auc"][0] - row["warm_modules.auc"][0]
            lines.append(
                f"| {arm} | {cell('overall.auc')} | {cell('new_modules.auc')} | {cell('warm_modules.auc')} | "
                f"{gap:+.4f} |"
            )
        lines.append("")
    return lines


def generated_markdown(payload: dict) -> list[str]:
    g = payload["generated"]
    s = payload["summary"]
    shop = g["shop"]
    lines = [
        "## The generated shop",
        "",
        f"Command: `{g.get('command', payload.get('command'))}`",
        "",
        f"Data: the generated shop at {shop['events']:,} target events (seed {shop['seed']}): {shop['impressions']:,} "
        f"impressions, {shop['clicks']:,} clicks; rows train {shop['rows']['train']:,} "
        f"({shop['train_clicks']:,} clicks), validation {shop['rows']['validation']:,}, test "
        f"{shop['rows']['test']:,} (the last 7 days). Embedding backfills (weekly versions): GNN "
        f"{g['backfill_seconds']['gnn']:.0f} s, MF {g['backfill_seconds']['mf']:.0f} s (about 0 when cached). "
        f"{g.get('seeds', payload.get('seeds'))} ranker seeds per arm. Total time {g['seconds'] / 60:.0f} min.",
        "",
        "### Click prediction on the test days (mean ± std over seeds)",
        "",
        "| ranker | AUC | / oracle | logloss | GAUC | NDCG@10 | ECE |",
        "|---|---|---|---|---|---|---|",
    ]
    o = g["oracle"]["overall"]
    lines.append(
        f"| oracle (true P(click)) | {o['auc']:.4f} | 1.000 | {o['logloss']:.5f} | {o['gauc']:.4f} | "
        f"{o['ndcg@10']:.4f} | {o['ece']:.4f} |"
    )
    for arm, row in s["arms"].items():
        cell = _cells(row)
        lines.append(
            f"| {arm} | {cell('overall.auc')} | {row['oracle_auc_ratio']:.3f} | {cell('overall.logloss', 5)} | "
            f"{cell('overall.gauc')} | {cell('overall.ndcg@10')} | {cell('overall.ece')} |"
        )
    lines += ["", "### Slices (AUC, mean ± std over seeds)", "", "| ranker | cold users | heavy users | new modules |"]
    lines.append("|---|---|---|---|")
    oc = g["oracle"]
    lines.append(
        f"| oracle | {oc['cold_users']['auc']:.4f} | {oc['heavy_users']['auc']:.4f} | {oc['new_modules']['auc']:.4f} |"
    )
    for arm, row in s["arms"].items():
        lines.append(
            f"| {arm} | "
            + " | ".join(f"{row[f'{p}.auc'][0]:.4f} ± {row[f'{p}.auc'][1]:.4f}" for p in SLICES[1:4])
            + " |"
        )
    slice_sizes = {p: g["oracle"][p]["impressions"] for p in SLICES[:4]}
    lines += ["", "Slice sizes (test impressions): " + ", ".join(f"{k} {v:,}" for k, v in slice_sizes.items()) + "."]
    lines += [
        "",
        "### Lift of the embeddings over hand-made features alone (test AUC)",
        "",
        "Two yardsticks: the lift of the seed means over the seeds' pooled standard deviation (the BARS convention: "
        "the spread of training runs on one backfill and one test set), and a paired bootstrap over test requests "
        "of the seed-averaged predictions (the test set's own noise).",
        "",
    ]
    lines += [
        "| ranker | slice | lift of the seed means | / pooled seed sd | lift of the seed-averaged predictions | "
        "bootstrap sd | 95 % interval | / bootstrap sd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm, parts in s["lifts"].items():
        for part in ("overall", "cold_users"):
            seeds, boot = parts[part], g.get("bootstrap", {}).get(arm, {}).get(part)
            cells = [f"{seeds['auc_lift']:+.4f}", f"{seeds['sigmas']:+.1f}"]
            if boot:
                cells += [f"{boot['auc_lift']:+.4f}", f"{boot['bootstrap_sd']:.4f}"]
                cells.append(f"[{boot['ci95'][0]:+.4f}, {boot['ci95'][1]:+.4f}]")
                cells.append(f"{boot['sigmas']:+.1f}")
            lines.append(f"| {arm} vs hand_made | {part.replace('_', ' ')} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"### Policy value: expected clicks per request of the top-40 order ({g['policy_requests']:,} test requests, "
        "every live module scored; truth from the click model)",
        "",
        "| order | expected clicks | / oracle | IPS (learned theta) | SNIPS | IPS (true theta) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in g["references"].items():
        if name == "logging policy":
            lines.append(
                f"| logging policy (logged pages) | {row['expected_clicks']:.4f} | {row['ratio_to_oracle']:.3f} | "
                f"on-policy: {row['logged_clicks']:.4f} logged clicks | | |"
            )
        else:
            lines.append(
                f"| {name} | {row['expected_clicks']:.4f} | {row['ratio_to_oracle']:.3f} | {row['ips']:.4f} ± "
                f"{row['ips_se']:.4f} | {row['snips']:.4f} | {row['ips_true_theta']:.4f} |"
            )
    for arm, row in s["arms"].items():
        cell = _cells(row)
        lines.append(
            f"| {arm} | {cell('policy.expected_clicks')} | {row['policy.ratio_to_oracle'][0]:.3f} | "
            f"{cell('policy.ips')} | {cell('policy.snips')} | |"
        )
    lines += ["", "### Goals", ""]
    lines += goal_lines(payload)
    return [*lines, ""]


def _cells(row: dict):
    """Formats `row[key]`, a (mean, std) pair, as "mean ± std"."""

    def cell(key: str, digits: int = 4) -> str:
        return f"{row[key][0]:.{digits}f} ± {row[key][1]:.{digits}f}"

    return cell


def mind_markdown(payload: dict) -> list[str]:
    mind = payload["mind"]
    lines = ["## MIND-small (real news impressions)", "", f"Command: `{mind['command']}`", ""]
    if "skipped" in mind:
        return [*lines, f"Skipped: {mind['skipped']}."]
    d = mind["data"]
    lines += [
        f"Data: `../shared/data/mind-small` through the `mind` adapter: {d['impressions']:,} shown news in "
        f"{d['requests']:,} impressions, {d['clicks']:,} clicks, 2019-11-09..13; news as modules, the users' click "
        "histories (stamped 1 s before the log's first impression) and logged clicks as events. Rows: train "
        f"{d['rows']['train']:,} (11-10..11), validation {d['rows']['validation']:,} (11-12), test "
        f"{d['rows']['test']:,} (11-13). Daily GNN versions trained on clicks of news "
        f"({mind['backfill_seconds']:.0f} s); "
        f"on the test day {d['test_rows_with_user_embedding']:.0%} of rows have a user embedding and "
        f"{d['test_rows_with_module_embedding']:.0%} a news embedding (news first shown that day have none). "
        f"{mind['seeds']} seeds per ranker. No click model here, so no policy value.",
        "",
        "| ranker | AUC | GAUC | logloss | NDCG@10 | ECE | AUC, news new that day |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in mind["baselines"].items():
        lines.append(f"| {name} | {m['auc']:.4f} | {m['gauc']:.4f} | {m['logloss']:.5f} | {m['ndcg@10']:.4f} | | |")
    for arm, row in payload.get("mind_summary", {}).items():
        cell = _cells(row)
        lines.append(
            f"| {arm} | {cell('overall.auc')} | {cell('overall.gauc')} | {cell('overall.logloss', 5)} | "
            f"{cell('overall.ndcg@10')} | {cell('overall.ece')} | {cell('new_modules.auc')} |"
        )
    sizes = ", ".join(f"{k} {v:,}" for k, v in mind["slice_sizes"].items())
    lines += [
        "",
        f"Slice sizes (test rows): {sizes}. The popularity row scores by clicks, so its logloss is not a "
        "probability's.",
        "",
    ]
    return lines


def goal_lines(payload: dict) -> list[str]:
    s, g = payload["summary"], payload["generated"]
    arms = s["arms"]
    best = max(arms, key=lambda a: arms[a]["overall.auc"][0])
    b = arms[best]
    policy_best = max(arms, key=lambda a: arms[a]["policy.expected_clicks"][0])
    refs = g["references"]
    verdict = lambda ok: "met" if ok else "**missed**"  # noqa: E731
    lines = [
        f"- Best ranker by AUC: {best}, {b['overall.auc'][0]:.4f} = {b['oracle_auc_ratio']:.3f} of the oracle's "
        f"(goal >= {GOALS['oracle_auc_ratio']}): {verdict(b['oracle_auc_ratio'] >= GOALS['oracle_auc_ratio'])}.",
        f"- Its ECE {b['overall.ece'][0]:.4f} (goal < {GOALS['ece_below']}): "
        f"{verdict(b['overall.ece'][0] < GOALS['ece_below'])}.",
    ]
    p = arms[policy_best]["policy.expected_clicks"][0]
    ratio = arms[policy_best]["policy.ratio_to_oracle"][0]
    above = p > refs["logging policy"]["expected_clicks"] and p > refs["popularity"]["expected_clicks"]
    lines.append(
        f"- Best order: {policy_best}, {p:.4f} expected clicks = {ratio:.3f} of the oracle's (goal >= "
        f"{GOALS['policy_ratio']}): {verdict(ratio >= GOALS['policy_ratio'])}; above the logging policy "
        f"({refs['logging policy']['expected_clicks']:.4f}) and popularity "
        f"({refs['popularity']['expected_clicks']:.4f}): "
        f"{verdict(above)}."
    )
    for arm, parts in s["lifts"].items():
        for part in ("overall", "cold_users"):
            sig = parts[part]["sigmas"]
            boot = g.get("bootstrap", {}).get(arm, {}).get(part, {}).get("sigmas", float("nan"))
            lines.append(
                f"- {arm} over hand_made on {part.replace('_', ' ')}: {sig:+.1f} pooled seed sd, {boot:+.1f} "
                f"bootstrap sd (goal > {GOALS['lift_sigmas']:.0f} on both): "
                f"{verdict(sig > GOALS['lift_sigmas'] and boot > GOALS['lift_sigmas'])}."
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset",
        choices=("generated", "mind", "all", "content", "content-mind"),
        default="all",
        help="content / content-mind: the content-vector ablation on the generated shop / on MIND (news titles)",
    )
    parser.add_argument("--events", type=int, default=500_000, help="target events of the generated shop")
    parser.add_argument("--shop-seed", type=int, default=7)
    parser.add_argument("--seeds", type=int, default=5, help="ranker seeds per arm")
    parser.add_argument("--epochs", type=int, default=20, help="maximum ranker epochs (early stopping decides)")
    parser.add_argument("--embedding-epochs", type=int, default=20, help="epochs of each backfilled version")
    parser.add_argument("--policy-requests", type=int, default=3000)
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=ARMS)
    parser.add_argument("--workdir", default=str(Path(__file__).resolve().parent / "work" / "ranker"))
    args = parser.parse_args()
    command = "python benchmarks/ranker.py " + " ".join(sys.argv[1:])
    sections = {}
    if args.dataset in ("generated", "all"):
        workdir = Path(args.workdir) / f"generated-{args.events}-seed{args.shop_seed}"
        workdir.mkdir(parents=True, exist_ok=True)
        generated = run_generated(args, workdir)
        sections["generated"] = generated | {"command": command, "seeds": args.seeds}
        sections["summary"] = summarise(generated)
    content = {}
    if args.dataset == "content":
        workdir = Path(args.workdir) / f"content-generated-{args.events}-seed{args.shop_seed}"
        workdir.mkdir(parents=True, exist_ok=True)
        content["generated"] = run_generated_content(args, workdir) | {
            "seeds": args.seeds,
            "command": command,
            "machine": machine(),
        }
    if args.dataset == "content-mind":
        workdir = Path(args.workdir) / "content-mind"
        workdir.mkdir(parents=True, exist_ok=True)
        result = run_mind_content(args, workdir)
        if "skipped" not in result:
            content["mind"] = result | {"seeds": args.seeds, "command": command, "machine": machine()}
    if args.dataset in ("mind", "all"):
        workdir = Path(args.workdir) / "mind"
        workdir.mkdir(parents=True, exist_ok=True)
        mind = run_mind(args, workdir)
        sections["mind"] = mind | {"command": command, "seeds": args.seeds}
        if "arms" in mind:
            sections["mind_summary"] = summarise_arms(mind["arms"])
    # A run of one dataset keeps the other's section (and the command that made it) from the results file, read
    # now rather than at the start, so two runs of different datasets may overlap.
    previous = RESULTS / "ranker.json"
    payload = json.loads(previous.read_text()) if previous.exists() else {}
    if sections:  # the machine line of the generated and MIND sections; the content sections carry their own
        payload |= sections | {"machine": machine()}
    payload["goals"] = GOALS
    if content:  # the content ablation keeps the other dataset's part
        payload["content"] = {k: v for k, v in payload.get("content", {}).items() if isinstance(v, dict)} | content
    write_results(RESULTS, "ranker", payload, markdown(payload), workdir=args.workdir)
    log("wrote benchmarks/results/ranker.{md,json}")


if __name__ == "__main__":
    main()
