from __future__ import annotations

from dataclasses import replace

import polars as pl
import pytest
import torch

from graphrec.data.validation import validate_events
from graphrec.embed.baselines import popularity_scorer
from graphrec.embed.config import ModelConfig
from graphrec.embed.model import MultiBehaviourGCN
from graphrec.embed.scoring import model_scorer
from graphrec.graph.snapshot import load_snapshot
from graphrec.graph.split import split_by_days, write_split
from graphrec.graph.tasks import RecTask, task_from_snapshot
from graphrec.metrics import evaluate_ranking
from training.config import EvalConfig, TrainConfig
from training.data import BPRTriples
from training.evaluate import learned_variants, run_evaluation
from training.system import EmbeddingSystem
from training.trainer import build_model, train_embeddings

FAST = TrainConfig(epochs=4, batch_size=1024, eval_every=2, patience=2)
SMALL = ModelConfig(dim=16, num_layers=2)


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory, small_shop):
    events = validate_events(small_shop.events).frame
    out = tmp_path_factory.mktemp("split") / "split"
    write_split(events, split_by_days(events, 3, 3), out, small_shop.items, small_shop.content)
    return out


@pytest.fixture(scope="module")
def tasks(split_dir):
    result = {}
    for name in ("val", "test"):
        targets = pl.read_parquet(split_dir / name / "purchase_item_targets.parquet")
        result[name] = task_from_snapshot(load_snapshot(split_dir / name / "snapshot"), targets)
    return result


def pairs(users, items, num_items):
    return set((users * num_items + items).tolist())


def test_no_held_out_positive_in_training_graph_or_samples(tasks):
    task = tasks["val"]
    truth_users = torch.repeat_interleave(torch.arange(task.num_users), task.truth.counts())
    held_out = pairs(truth_users, task.truth.indices, task.num_items)
    train_target = pairs(task.edges["purchase"][0], task.edges["purchase"][1], task.num_items)
    # Held-out positives the user had not bought before are absent from the training purchase edges.
    new_pairs = held_out - train_target
    assert new_pairs
    every, auxiliary = set(), set()
    for behaviour, (u, i, _) in task.edges.items():
        every |= pairs(u, i, task.num_items)
        if behaviour != "purchase":
            auxiliary |= pairs(u, i, task.num_items)
    saw_history_negative = False
    for epoch in range(3):
        for users, positives, negatives, is_target, from_history in BPRTriples(task, "purchase", FAST, epoch):
            # Target positives are training purchases only, never a held-out purchase...
            assert not (pairs(users[is_target], positives[is_target], task.num_items) & new_pairs)
            # ...every positive is an edge of the training graph (events before the cutoff)...
            assert pairs(users, positives, task.num_items) <= every
            # ...a target triple's negative is never a training purchase of the user (it may be an item the user
            # only viewed: a history negative)...
            target_negatives = pairs(users[is_target], negatives[is_target], task.num_items)
            assert not (target_negatives & train_target)
            saw_history_negative |= bool(target_negatives & every)
            # ...and an auxiliary triple's negative is never a training positive of any behaviour.
            assert not (pairs(users[~is_target], negatives[~is_target], task.num_items) & every)
            # Negatives flagged as history ones are the user's own items, the others never are.
            assert pairs(users[from_history], negatives[from_history], task.num_items) <= every
            # A history negative only meets a positive from the user's own auxiliary history.
            assert pairs(users[from_history], positives[from_history], task.num_items) <= auxiliary
            assert not (pairs(users[~from_history], negatives[~from_history], task.num_items) & every)
            assert not from_history[~is_target].any()
    assert saw_history_negative


def test_sampling_is_seeded_per_epoch(tasks):
    first = BPRTriples(tasks["val"], "purchase", FAST, epoch=1).batches[0]
    again = BPRTriples(tasks["val"], "purchase", FAST, epoch=1).batches[0]
    other = BPRTriples(tasks["val"], "purchase", FAST, epoch=2).batches[0]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[2], other[2])


def train_killed_at_epoch(epoch, monkeypatch, task, val_task, config, out):
    """A training run into `out` that dies at the start of `epoch` (0-based), as a killed job would."""

    def crash(system):
        if system.current_epoch == epoch:
            raise RuntimeError("killed")

    monkeypatch.setattr(EmbeddingSystem, "on_train_epoch_start", crash, raising=False)
    with pytest.raises(RuntimeError, match="killed"):
        train_embeddings(task, val_task, SMALL, config, out, progress=False)
    monkeypatch.undo()


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, monkeypatch, tasks, ema_decay):
    task = tasks["val"]
    config = replace(FAST, ema_decay=ema_decay)
    full, _ = train_embeddings(task, None, SMALL, config, tmp_path / "full", progress=False)
    # A run that dies at the start of its third epoch (no validation ran: eval_every is 2 and there is no val task).
    train_killed_at_epoch(2, monkeypatch, task, None, config, tmp_path / "resumed")
    last = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1  # the last completed epoch
    resumed, summary = train_embeddings(task, None, SMALL, config, tmp_path / "resumed", progress=False)
    assert summary["epochs_run"] == 4
    assert not any(p.name.startswith("checkpoints.stale-") for p in (tmp_path / "resumed").iterdir())
    # The interrupted run's logs survive the resume.
    assert sorted(p.name for p in (tmp_path / "resumed" / "logs").iterdir()) == ["version_0", "version_1"]
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_resumed_run_ranks_with_the_history_scale_its_earlier_epochs_chose(tmp_path, monkeypatch, tasks):
    task = tasks["val"]
    config = replace(FAST, epochs=3, eval_every=2, patience=4)  # one validation, after the second epoch
    _, full = train_embeddings(task, task, SMALL, config, tmp_path / "full", progress=False)
    assert full["best_epoch"] == 1 and "by_scale" in full["history"]
    train_killed_at_epoch(2, monkeypatch, task, task, config, tmp_path / "resumed")
    # The best epoch was validated before the kill: its scales come back with the checkpoint.
    _, resumed = train_embeddings(task, task, SMALL, config, tmp_path / "resumed", progress=False)
    assert resumed["best_epoch"] == 1
    assert resumed["history"] == full["history"]


def test_a_run_resumed_from_an_unfused_optimiser_steps_fused(tmp_path, tasks):
    # A checkpoint written before the optimiser step was fused: resuming it restores `fused: False` unless the
    # system sets it back.
    task = tasks["val"]
    train_embeddings(task, None, SMALL, replace(FAST, epochs=1), tmp_path, progress=False)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    for group in checkpoint["optimizer_states"][0]["param_groups"]:
        group["fused"] = False
    system = EmbeddingSystem(build_model(task, SMALL), FAST)
    system.on_load_checkpoint(checkpoint)
    optimizer = system.configure_optimizers()
    optimizer.load_state_dict(checkpoint["optimizer_states"][0])
    assert [group["fused"] for group in optimizer.param_groups] == [True, True]


def test_checkpoint_of_a_different_run_is_not_resumed(tmp_path, tasks):
    task = tasks["val"]
    train_embeddings(task, None, SMALL, replace(FAST, epochs=3, lr=0.05), tmp_path / "work", progress=False)
    fresh, summary = train_embeddings(task, None, SMALL, replace(FAST, epochs=2), tmp_path / "work", progress=False)
    reference, _ = train_embeddings(task, None, SMALL, replace(FAST, epochs=2), tmp_path / "reference", progress=False)
    assert summary["epochs_run"] == 2
    assert any(p.name.startswith("checkpoints.stale-") for p in (tmp_path / "work").iterdir())
    for a, b in zip(fresh.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_softmax_loss_trains(tmp_path, tasks):
    config = replace(FAST, loss="softmax", epochs=3)
    _, summary = train_embeddings(
        tasks["val"], tasks["val"], replace(SMALL, normalize=True), config, tmp_path, progress=False
    )
    metrics = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    losses = [float(line.split(",")[2]) for line in metrics[1:] if line.split(",")[2]]
    assert len(losses) == 3 and losses[-1] < losses[0] and summary["best_score"] > 0


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_softmax_loss_masks_copies_of_the_positive(tasks, dtype, atol):
    task = tasks["val"]
    model = MultiBehaviourGCN(task.num_users, task.num_items, task.behaviours, task.target, SMALL, {})
    system = EmbeddingSystem(model, replace(FAST, loss="softmax", logits_dtype=dtype))
    system.attach(task, None)
    generator = torch.Generator().manual_seed(3)
    u = torch.randn(6, 16, generator=generator, requires_grad=True)
    items = torch.randn(task.num_items, 16, generator=generator)
    positives = torch.tensor([5, 7, 5, 9, 5, 2])  # item 5 three times
    negatives = torch.tensor([7, 1, 3, 5, 4, 8])  # 7 and 5 are other rows' positives
    history = torch.tensor([False, False, True, False, False, False])
    weight = torch.ones(6)
    loss = system._softmax_loss(u, items[torch.cat([positives, negatives])], positives, negatives, weight, history)
    # Reference: row r's candidates are every positive and negative except other copies of its own positive and
    # the history negative, with logits u_r . v_c - log q_c.
    candidates = torch.cat([positives, negatives])
    masked = set((len(positives) + torch.nonzero(history).flatten()).tolist())
    expected = []
    for r in range(6):
        keep = [c for c in range(12) if c == r or (candidates[c] != positives[r] and c not in masked)]
        logits = u[r] @ items[candidates[keep]].T - system._log_q[candidates[keep]]
        expected.append(-torch.log_softmax(logits, 0)[keep.index(r)])
    reference = torch.stack(expected).mean()
    assert torch.allclose(loss, reference, atol=atol)
    (gradient,) = torch.autograd.grad(loss, u)
    (expected_gradient,) = torch.autograd.grad(reference, u)
    assert gradient.dtype == torch.float32 and torch.allclose(gradient, expected_gradient, atol=atol)


def test_early_stopping_keeps_best_checkpoint(tmp_path, tasks):
    _, summary = train_embeddings(tasks["val"], tasks["val"], SMALL, replace(FAST, epochs=6), tmp_path, progress=False)
    assert summary["best_checkpoint"].endswith("best.ckpt") and summary["best_score"] > 0
    assert (tmp_path / "logs" / "version_0" / "metrics.csv").exists()
    # The curve holds one score per validated epoch, and the best of it is the kept checkpoint's.
    curve = summary["val_curve"]
    assert len(curve) == summary["epochs_run"] // FAST.eval_every
    assert max(curve.values()) == pytest.approx(summary["best_score"], abs=1e-6)
    assert max(curve, key=curve.get) == summary["best_epoch"]


def test_weight_averaging_validates_and_returns_the_average(tmp_path, tasks):
    task = tasks["val"]
    config = replace(FAST, epochs=4, patience=4)
    raw, _ = train_embeddings(task, None, SMALL, config, tmp_path / "raw", progress=False)
    # A decay near 0 makes the average the latest weights: the same model as training without averaging.
    latest, _ = train_embeddings(
        task, None, SMALL, replace(config, ema_decay=1e-9), tmp_path / "latest", progress=False
    )
    for name, a in raw.state_dict().items():
        assert torch.allclose(a, latest.state_dict()[name], atol=1e-6), name
    averaged, summary = train_embeddings(
        task, task, SMALL, replace(config, ema_decay=0.9), tmp_path / "averaged", progress=False
    )
    assert not torch.allclose(raw.user_embedding.weight, averaged.user_embedding.weight, atol=1e-4)
    # The kept checkpoint's score is the averaged model's (at the history scale the run chose), and the returned
    # model is that checkpoint's.
    scorer = model_scorer(averaged, history=summary["history"]["scale"])
    score = evaluate_ranking(scorer, task.truth, task.exclude, ks=(FAST.k,))[f"ndcg@{FAST.k}"]
    assert score == pytest.approx(summary["best_score"], abs=1e-6)


def test_ema_decay_must_be_a_fraction():
    with pytest.raises(ValueError, match=r"train\.ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_ablation_wiring():
    variants = {
        name: (m, t)
        for name, m, t in learned_variants(ModelConfig(), TrainConfig(), EvalConfig(ablations=True), "purchase")
    }
    assert variants["mf_bpr"][0].num_layers == 0 and variants["mf_bpr"][0].behaviours == ["purchase"]
    assert variants["lightgcn"][0].behaviours == ["purchase"] and not variants["lightgcn"][0].use_features
    assert variants["graphrec"][0].behaviours == [] and variants["graphrec"][1].aux_ratio > 0
    assert variants["graphrec_no_aux"][0].behaviours == ["purchase"] and variants["graphrec_no_aux"][1].aux_ratio == 0
    assert not variants["graphrec_no_features"][0].use_features
    sampled = TrainConfig(fanouts=[10, 5, 5])
    variants = {name: t for name, _, t in learned_variants(ModelConfig(), sampled, EvalConfig(), "purchase")}
    assert variants["mf_bpr"].fanouts is None  # no layers to sample for
    assert all(variants[name].fanouts == [10, 5, 5] for name in variants if name != "mf_bpr")


def test_evaluation_job_writes_metrics(tmp_path, split_dir):
    report = run_evaluation(
        split_dir, tmp_path / "eval", model=SMALL, train=FAST, eval_config=EvalConfig(ablations=False)
    )
    results = report["results"]
    assert {"popularity", "history", "item_knn", "mf_bpr", "lightgcn", "graphrec", "graphrec_dot_only"} <= set(results)
    for metrics in results.values():
        assert 0 <= metrics["ndcg@20"] <= 1 and metrics["users"] == report["task_stats"]["test"]["users_evaluated"]
    assert (tmp_path / "eval" / "metrics.md").read_text().count("| graphrec |") == 1
    assert (tmp_path / "eval" / "curves.png").stat().st_size > 0


def test_train_job_writes_model_artifact(tmp_path, split_dir):
    from graphrec.embed.artifact import load_model
    from training.train import train_job

    metadata = train_job(
        split_dir / "test" / "snapshot", tmp_path / "model", validation=split_dir / "val", model=SMALL, train=FAST
    )
    model, loaded = load_model(tmp_path / "model")
    assert loaded["snapshot"]["cutoff"] == metadata["snapshot"]["cutoff"]
    assert model.config.dim == SMALL.dim and loaded["training"]["best_score"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.work", "model"]
    # The artifact supersedes the run's checkpoints (a daily job would pile up a set per run); the logs stay.
    assert not (tmp_path / ".model.work" / "checkpoints").exists() and (tmp_path / ".model.work" / "logs").is_dir()
    assert loaded["metrics"] == {"val_ndcg@20": loaded["training"]["best_score"]}


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path, split_dir):
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "training.cli",
        "--verbose",  # Lightning's per-process banner is shown only with --verbose
        "train",
        "--snapshot",
        str(split_dir / "test" / "snapshot"),
        "--out",
        str(tmp_path / "model"),
        "--embeddings.model.dim",
        "16",
        "--embeddings.train.epochs",
        "2",
        "--embeddings.train.batch_size",
        "512",
        "--embeddings.train.strategy",
        "ddp",
        "--embeddings.train.devices",
        "2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MEMBER: 2/2" in result.stdout + result.stderr  # Lightning's banner of the second process
    from graphrec.embed.artifact import load_model

    _, metadata = load_model(tmp_path / "model")
    assert metadata["train"]["strategy"] == "ddp" and metadata["train"]["devices"] == 2
    assert metadata["training"]["epochs_run"] == 2


def test_warm_start_carries_known_ids_over(tmp_path, split_dir):
    from graphrec.embed.artifact import load_model
    from graphrec.graph.snapshot import load_snapshot
    from training.train import train_job, warm_start_parameters

    train_job(split_dir / "val" / "snapshot", tmp_path / "old", model=SMALL, train=replace(FAST, epochs=2))
    old, _ = load_model(tmp_path / "old")
    old_users = pl.read_parquet(tmp_path / "old" / "ids" / "user.parquet").to_series()
    snapshot = load_snapshot(split_dir / "test" / "snapshot")  # a week more data: more users, same items
    init, info = warm_start_parameters(tmp_path / "old", SMALL, snapshot, "item", list(old.behaviours), "purchase")
    rows, values = init["user_embedding.weight"]
    assert info["shared"]["user"] == len(old_users) == len(rows)
    # Row r of the new model gets the old embedding of the same original user id.
    new_ids = snapshot.ids_of("user", rows.numpy()).to_list()
    old_position = {user: i for i, user in enumerate(old_users.to_list())}
    expected = old.user_embedding.weight[[old_position[u] for u in new_ids]]
    assert torch.equal(values, expected)
    assert torch.equal(init["behaviour_logits"][1], old.behaviour_logits.detach())
    metadata = train_job(
        split_dir / "test" / "snapshot",
        tmp_path / "new",
        model=SMALL,
        train=replace(FAST, epochs=2),
        warm_start=tmp_path / "old",
    )
    assert metadata["warm_start"]["shared"]["item"] > 0
    with pytest.raises(Exception, match="dimension 16"):
        warm_start_parameters(tmp_path / "old", ModelConfig(dim=8), snapshot, "item", list(old.behaviours), "purchase")


def test_history_term_trains_on_top_of_the_embeddings(tasks):
    task = tasks["val"]
    config = replace(SMALL, cooccurrence=True)
    model = MultiBehaviourGCN(task.num_users, task.num_items, task.behaviours, task.target, config)
    system = EmbeddingSystem(model, replace(FAST, l2=0.0))
    system.attach(task, None)
    system.log = lambda *args, **kwargs: None
    batch = next(b for b in BPRTriples(task, "purchase", FAST, 0) if b[4].any())
    from_history = batch[4]
    # Triples with history negatives only: the embeddings get no gradient, the history weights do.
    only_history = tuple(t[from_history] for t in batch)
    system.training_step(only_history, 0).backward()
    assert system.model.user_embedding.weight.grad.abs().sum() == 0
    assert system.model.item_embedding.weight.grad.abs().sum() == 0
    assert system.model.history_weight.grad.abs().sum() > 0 and system.model.conversion_weight.grad != 0
    assert system.model.cooccurrence_weight.grad != 0
    # The history weights, co-occurrence's included, take the larger learning rate.
    fast = system.configure_optimizers().param_groups[1]["params"]
    assert any(p is system.model.cooccurrence_weight for p in fast)
    system.zero_grad()
    system.training_step(tuple(t[~from_history] for t in batch), 0).backward()
    assert system.model.user_embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", ["bpr", "softmax"])
def test_sampled_step_with_all_neighbours_equals_full_graph_step(tasks, loss):
    task = tasks["val"]
    batch = BPRTriples(task, "purchase", FAST, 0).batches[0]
    steps = []
    for fanouts in (None, [-1, -1]):
        torch.manual_seed(0)
        model = MultiBehaviourGCN(task.num_users, task.num_items, task.behaviours, task.target, SMALL)
        system = EmbeddingSystem(model, replace(FAST, loss=loss, fanouts=fanouts))
        system.attach(task, None)
        system.log = lambda *args, **kwargs: None
        value = system.training_step(batch, 0)
        value.backward()
        steps.append((value, {n: p.grad for n, p in system.model.named_parameters()}))
    (full, full_grads), (sampled, sampled_grads) = steps
    assert torch.allclose(full, sampled, atol=1e-5)
    for name, grad in full_grads.items():
        other = sampled_grads[name]
        if grad is None or other is None:  # a parameter outside this batch's graph (e.g. the history weights)
            present = grad if grad is not None else other
            assert present is None or present.abs().sum() == 0, name
            continue
        assert torch.allclose(grad, other, atol=1e-5), name


def test_neighbour_sampled_training_learns(tmp_path, tasks):
    config = replace(FAST, epochs=6, fanouts=[10, 5])
    _, summary = train_embeddings(tasks["val"], tasks["val"], SMALL, config, tmp_path, progress=False)
    task = tasks["val"]
    popularity = evaluate_ranking(popularity_scorer(task), task.truth, task.exclude, (20,), task.popularity())
    assert summary["best_score"] > popularity["ndcg@20"]


def test_auto_fanouts_sample_only_graphs_above_the_threshold(tmp_path, tasks):
    task = tasks["val"]
    edges = sum(len(task.edges[b][0]) for b in task.behaviours)
    assert TrainConfig().fanouts == "auto"
    for threshold, expected in ((edges + 1, None), (edges, [10, 5])):
        config = replace(FAST, epochs=1, fanouts="auto", sample_above_edges=threshold)
        model = MultiBehaviourGCN(task.num_users, task.num_items, task.behaviours, task.target, SMALL)
        system = EmbeddingSystem(model, config)
        system.attach(task, None)
        assert system.fanouts == expected
        assert (system.sampler is None) == (expected is None)
        assert (system.sampler.fanouts if system.sampler else None) == expected
    _, summary = train_embeddings(task, None, SMALL, config, tmp_path, progress=False)
    assert summary["fanouts"] == [10, 5]  # the run records how it propagated
    # Explicit settings are kept whatever the graph's size; a model without layers has nothing to sample.
    assert replace(FAST, fanouts=None, sample_above_edges=1).resolved_fanouts(3, edges) is None
    assert replace(FAST, fanouts=[4, 4, 4], sample_above_edges=10**9).resolved_fanouts(3, 5) == [4, 4, 4]
    assert replace(FAST, fanouts="auto", sample_above_edges=1).resolved_fanouts(0, edges) is None
    with pytest.raises(ValueError, match="fanouts"):
        TrainConfig(fanouts="sometimes")


def test_fanouts_need_one_entry_per_layer():
    with pytest.raises(ValueError, match="one entry per layer"):
        EmbeddingSystem(MultiBehaviourGCN(5, 5, ["purchase"], "purchase", SMALL), replace(FAST, fanouts=[5]))


def test_strong_baselines_are_tuned_on_validation_and_reported_as_they_finish(tmp_path, split_dir):
    from graphrec.graph.tasks import window_task
    from training.evaluate import compare_methods, markdown_table

    val, test = (window_task(split_dir / name) for name in ("val", "test"))
    seen: list[list[str]] = []
    config = EvalConfig(methods=["popularity", "item_knn_tuned", "ease", "gf_cf"], ease_max_dim=10)
    results = compare_methods(test, val, tmp_path, eval_config=config, on_result=lambda r: seen.append(list(r)))
    assert seen == [["popularity"], ["popularity", "item_knn_tuned"], [*seen[1], "ease"], [*seen[1], "ease", "gf_cf"]]
    for name in ("item_knn_tuned", "gf_cf"):
        tuning = results[name]["tuning"]
        assert tuning["on"] == "validation" and tuning["settings"] in [t["settings"] for t in tuning["validation"]]
        assert 0 < results[name]["ndcg@20"] <= 1
    assert "above its limit of 10" in results["ease"]["skipped"]  # too large for the configured limit: said so
    assert "| ease | not run: EASE would invert" in markdown_table(results, [10, 20])
    # Without a validation window the settings are chosen on a holdout carved from training data.
    held = compare_methods(test, None, tmp_path, eval_config=EvalConfig(methods=["gf_cf"]))
    assert held["gf_cf"]["tuning"]["on"] == "training holdout"


def test_test_metrics_over_a_fixed_sample_of_users_where_capped(tmp_path, tasks):
    from graphrec.embed.baselines import history_scorer
    from graphrec.metrics import sample_users
    from training.evaluate import compare_methods

    test = tasks["test"]
    users_with_truth = int((test.truth.counts() > 0).sum())
    methods = ["popularity", "history"]
    everyone = compare_methods(test, None, tmp_path, eval_config=EvalConfig(methods=methods))
    assert everyone["history"]["users"] == users_with_truth > 40
    capped = compare_methods(test, None, tmp_path, eval_config=EvalConfig(methods=methods, max_users=40))
    again = compare_methods(test, None, tmp_path, eval_config=EvalConfig(methods=methods, max_users=40))
    assert capped["history"]["users"] == capped["popularity"]["users"] == 40
    for name in methods:  # the same users every run
        assert {k: v for k, v in capped[name].items() if k != "seconds"} == {
            k: v for k, v in again[name].items() if k != "seconds"
        }
    sample = sample_users(test.truth, 40)
    scorer = history_scorer(test)
    expected = evaluate_ranking(scorer, test.truth, test.exclude, (10, 20), test.popularity(), users=sample)
    assert capped["history"]["ndcg@20"] == pytest.approx(expected["ndcg@20"])
    assert capped["history"]["cold_users"]["users"] <= min(40, everyone["history"]["cold_users"]["users"])


def test_the_run_keeps_the_history_term_only_where_it_helps_on_validation(tmp_path, tasks):
    from types import SimpleNamespace

    from training.trainer import history_decision

    _, summary = train_embeddings(tasks["val"], tasks["val"], SMALL, FAST, tmp_path / "run", progress=False)
    decision = summary["history"]
    assert decision["epoch"] == summary["best_epoch"]
    # Every configured scale was ranked, 0 (the dot product alone) and 1 (as trained) among them, and the run
    # keeps the best one; the monitored score is that scale's.
    by_scale = {float(s): v for s, v in decision["by_scale"].items()}
    assert set(by_scale) == set(FAST.history_scales) | {0.0, 1.0}
    assert by_scale[1.0] == decision["with_history"] and by_scale[0.0] == decision["dot_only"]
    assert by_scale[decision["scale"]] == max(by_scale.values())
    assert decision["kept"] == (decision["scale"] > 0)
    assert summary["best_score"] == pytest.approx(max(by_scale.values()), abs=1e-5)
    system = SimpleNamespace(model=SimpleNamespace(history_behaviours=["view"]), history_checks={})
    system.history_checks[3] = {"scale": 0.0, "by_scale": {0.0: 0.12, 1.0: 0.10}}
    system.history_checks[4] = {"scale": 2.0, "by_scale": {0.0: 0.08, 1.0: 0.10, 2.0: 0.13}}
    assert history_decision(system, 3, validated=True)["kept"] is False
    assert history_decision(system, 4, validated=True) == {
        "kept": True, "scale": 2.0, "with_history": 0.1, "dot_only": 0.08, "epoch": 4,
        "by_scale": {"0": 0.08, "1": 0.1, "2": 0.13},
    }  # fmt: skip
    assert history_decision(system, 3, validated=False) is None
    lost = history_decision(system, 5, validated=True)  # lost in a resume: the trained term
    assert lost["kept"] is True and lost["scale"] == 1.0
    without = SimpleNamespace(model=SimpleNamespace(history_behaviours=[]), history_checks={})
    assert history_decision(without, 3, validated=True) is None


@pytest.mark.parametrize("path", ["sparse", "dense"])
def test_a_history_scale_sweep_equals_ranking_at_each_scale(tasks, monkeypatch, path):
    """Whether the sweep rewrites only the history term's entries per scale (a sparse term) or adds the whole term
    (one filled by co-occurrence), each scale's figures are those of ranking with it alone."""
    import graphrec.embed.scoring as scoring
    from graphrec.embed.scoring import history_scale_sweep

    monkeypatch.setattr(scoring, "SPARSE_TERM", 0 if path == "sparse" else 10**12)
    task = tasks["val"]
    model = build_model(task, SMALL)
    model.set_graph(task.edges, task.item_features)
    with torch.no_grad():
        model.history_weight.copy_(torch.linspace(0.5, 2.0, len(model.history_behaviours)))
    scales = [4.0, 0.0, 0.5, 1.0]  # any order
    sweep = history_scale_sweep(model, task, scales, k=10)
    assert list(sweep) == sorted(scales)
    for scale in scales:
        alone = evaluate_ranking(model_scorer(model, history=scale), task.truth, task.exclude, ks=(10,))
        for name in ("ndcg@10", "recall@10", "hr@10", "map@10"):
            assert sweep[scale][name] == pytest.approx(alone[name], abs=1e-6), (scale, name)
    # The scales rank differently here, so the sweep is not one ranking reported several times.
    assert len({round(result["ndcg@10"], 6) for result in sweep.values()}) > 1
    assert evaluate_ranking(model_scorer(model, history=False), task.truth, task.exclude, ks=(10,))["ndcg@10"] == (
        pytest.approx(sweep[0.0]["ndcg@10"], abs=1e-6)
    )


def test_evaluation_ranks_graphrec_as_its_validation_run_decided(tmp_path, monkeypatch, tasks):
    import training.evaluate as evaluation

    results = evaluation.compare_methods(
        tasks["test"], tasks["val"], tmp_path, SMALL, FAST, EvalConfig(methods=["graphrec"], ablations=False)
    )
    graphrec = results["graphrec"]
    assert graphrec["history_kept"] == graphrec["val"]["history"]["kept"]
    assert graphrec["history_scale"] == graphrec["val"]["history"]["scale"]
    # Whatever scale the validation run chose is the one the test ranking uses.
    real_train, real_scorer, used = evaluation.train_embeddings, evaluation.model_scorer, []

    def validation_chose_four(task, val_task, *args, **kwargs):
        model, summary = real_train(task, val_task, *args, **kwargs)
        if val_task is not None:
            summary["history"] = {**summary["history"], "kept": True, "scale": 4.0}
        return model, summary

    def recording_scorer(model, history=True):
        used.append(history)
        return real_scorer(model, history)

    monkeypatch.setattr(evaluation, "train_embeddings", validation_chose_four)
    monkeypatch.setattr(evaluation, "model_scorer", recording_scorer)
    results = evaluation.compare_methods(
        tasks["test"], tasks["val"], tmp_path / "four", SMALL, FAST, EvalConfig(methods=["graphrec"], ablations=False)
    )
    assert used == [4.0, False]  # graphrec at the chosen scale, then its dot-only row
    assert results["graphrec"]["history_scale"] == 4.0


def test_validation_ranks_a_fixed_bounded_sample_of_users(tasks):
    from training.system import validation_users

    task = tasks["val"]
    with_truth = int((task.truth.counts() > 0).sum())
    assert validation_users(task, TrainConfig(val_max_users=None)) is None
    assert validation_users(task, TrainConfig(val_max_users=with_truth)) is None  # all of them: no sample
    sample = validation_users(task, TrainConfig(val_max_users=10))
    assert len(sample) == 10 and bool((task.truth.counts()[sample] > 0).all())
    assert torch.equal(sample, validation_users(task, TrainConfig(val_max_users=10)))  # the same every epoch
    with pytest.raises(ValueError, match=r"embeddings\.train\.val_max_users"):
        TrainConfig(val_max_users=0)


def test_a_fit_stops_at_its_time_budget_and_says_so(tmp_path, tasks):
    budget = replace(FAST, epochs=500, eval_every=1, patience=500, time_budget_minutes=0.05)
    _, summary = train_embeddings(tasks["val"], tasks["val"], SMALL, budget, tmp_path / "run", progress=False)
    assert summary["stopped_by_time_budget"] is True and summary["epochs_run"] < 500
    assert summary["best_epoch"] < summary["epochs_run"]
    _, summary = train_embeddings(tasks["val"], tasks["val"], SMALL, FAST, tmp_path / "free", progress=False)
    assert summary["stopped_by_time_budget"] is False
    with pytest.raises(ValueError, match=r"embeddings\.train\.time_budget_minutes"):
        TrainConfig(time_budget_minutes=0)


def test_history_negatives_meet_only_positives_from_the_users_history():
    from graphrec.metrics import Interactions

    # Every user views items 0-9 and buys two of them plus two items never viewed (10-39).
    num_users, num_items = 40, 40
    viewed_users = torch.arange(num_users).repeat_interleave(10)
    viewed_items = torch.arange(10).repeat(num_users)
    bought_users = torch.arange(num_users).repeat_interleave(4)
    bought_items = torch.stack(
        [torch.tensor([u % 10, (u + 1) % 10, 10 + u % 30, 10 + (u + 7) % 30]) for u in range(num_users)]
    ).flatten()
    edges = {
        "view": (viewed_users, viewed_items, torch.ones(len(viewed_users))),
        "purchase": (bought_users, bought_items, torch.ones(len(bought_users))),
    }
    empty = Interactions.from_pairs([], [], num_users, num_items)
    task = RecTask(num_users, num_items, ["view", "purchase"], "purchase", edges, empty, empty)
    config = replace(FAST, history_negatives=1.0)
    swapped = outside = 0
    for _, positives, _, is_target, from_history in BPRTriples(task, "purchase", config, 0):
        in_history = positives < 10
        assert not (from_history & ~in_history).any()  # never a carted item against an unviewed purchase
        swapped += int(from_history.sum())
        outside += int((is_target & ~in_history).sum())
    assert swapped > 0 and outside > 0


def test_cold_start_loss_trains_the_content_part_and_leaves_the_users_alone(tasks):
    task = tasks["val"]
    assert task.vector_sizes() == {"image_embedding": 32}
    model = MultiBehaviourGCN(
        task.num_users, task.num_items, task.behaviours, task.target, SMALL, task.feature_sizes(), task.vector_sizes()
    )
    batch = next(b for b in BPRTriples(task, "purchase", FAST, 0) if (~b[4]).any())
    batch = tuple(t[~batch[4]] for t in batch)
    grads = {}
    for weight in (0.0, 1.0):
        system = EmbeddingSystem(model, replace(FAST, l2=0.0, cold_start_weight=weight))
        system.attach(task, None)
        system.log = lambda *args, **kwargs: None
        system.zero_grad()
        system.training_step(batch, 0).backward()
        grads[weight] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    # The cold-start loss adds to the gradient of the content part; the user vectors get the same gradient with
    # or without it (it reads them detached).
    assert grads[1.0]["content_gate"] != grads[0.0]["content_gate"]
    assert grads[1.0]["feature_gate"] != grads[0.0]["feature_gate"]
    assert torch.equal(grads[0.0]["user_embedding.weight"], grads[1.0]["user_embedding.weight"])
