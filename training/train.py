"""The training job: fit embeddings on a graph snapshot and save the model as an artifact.

`graphrec train --snapshot artifacts/default/split/test/snapshot --out artifacts/model` trains on every edge of
the snapshot; with `--val_window` (a split window directory holding `snapshot/` and its target table) it
early-stops on that window's NDCG. The artifact (`graphrec.embed.artifact`) records the hyperparameters, the
training config, the snapshot's manifest fingerprint and the validation score, and is written atomically. With
`--embeddings.train.strategy ddp --embeddings.train.devices 2` Lightning runs two processes; only rank 0 writes the
artifact. Once the artifact is written, the run's checkpoints are removed: they are superseded, and a scheduled job
would otherwise pile up a set per run.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphrec.embed.artifact import is_model, load_model, read_model_info, save_model
from graphrec.embed.config import ModelConfig
from graphrec.errors import GraphrecError
from graphrec.graph.snapshot import Snapshot, load_snapshot
from graphrec.graph.tasks import task_from_snapshot, window_task
from training.config import EmbeddingStageConfig, TrainConfig
from training.trainer import train_embeddings

log = logging.getLogger("graphrec.train")


def train_job(
    snapshot: str | Path,
    out: str | Path = "artifacts/model",
    validation: str | Path | None = None,
    target_event: str = "purchase",
    target_node: str = "item",
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    warm_start: str | Path | None = None,
) -> dict[str, Any] | None:
    """Train on `snapshot` and write the model artifact to `out`; returns its metadata (None on ranks > 0).

    With `warm_start` (a previous model artifact of the same dimension), users and items the previous model knew
    start from its id embeddings, and the behaviour and history weights from its values. Retrained embeddings then
    stay close to the live version, so the export's alignment finds them compatible (see benchmarks/export.py).
    """
    model = model or ModelConfig()
    train = train or TrainConfig()
    out = Path(out)
    trained_on = Path(snapshot)
    loaded = load_snapshot(trained_on)
    task = task_from_snapshot(loaded, None, target_event, target_node)
    val_task = None
    if validation is not None:
        window = Path(validation)
        val_task = window_task(window, target_event, target_node)
        if (val_task.num_users, val_task.num_items) != (task.num_users, task.num_items):
            # Validation needs the same node index space as training: train on the validation window's snapshot.
            trained_on = window / "snapshot"
            loaded = load_snapshot(trained_on)
            task = task_from_snapshot(loaded, None, target_event, target_node)
            log.info("training on the validation window's snapshot so node indices match its targets")
    init, warm = (None, None)
    if warm_start is not None:
        init, warm = warm_start_parameters(warm_start, model, loaded, target_node, task.behaviours, target_event)
    work = out.parent / f".{out.name}.work"  # checkpoints (to resume after a kill) and CSV logs
    trained, summary = train_embeddings(task, val_task, model, train, work, init=init)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank != 0:  # under DDP every process trains; one writes the artifact
        return None
    metrics = {summary["monitor"]: summary["best_score"]} if summary.get("best_score") is not None else {}
    metadata = save_model(
        trained, out, loaded, trained_on, target_event, target_node, asdict(train), summary, warm, metrics
    )
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    log.debug("model written to %s", out)
    return metadata


def warm_start_parameters(
    previous: str | Path,
    config: ModelConfig,
    snapshot: Snapshot,
    target_node: str,
    behaviours: list[str],
    target_event: str,
) -> tuple[dict[str, tuple[torch.Tensor | None, torch.Tensor]], dict[str, Any]]:
    """Initial values from a previous model for the nodes of `snapshot` it already knew (matched by original id)."""
    previous = Path(previous)
    old, metadata = load_model(previous)
    info = read_model_info(previous)
    if old.config.dim != config.dim:
        raise GraphrecError(
            f"{previous}: dimension {old.config.dim}, cannot warm-start a model of dimension {config.dim}"
        )
    init: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = {}
    shared = {}
    for node, name in (("user", "user_embedding.weight"), (target_node, "item_embedding.weight")):
        old_ids = info.ids(node)
        new_index = snapshot.index_of(node, old_ids)  # null where the node is gone
        keep = new_index.is_not_null().to_numpy()
        rows = torch.from_numpy(new_index.drop_nulls().to_numpy().astype(np.int64))
        init[name] = (rows, old.state_dict()[name][torch.from_numpy(np.flatnonzero(keep))])
        shared[node] = int(keep.sum())
    expected_behaviours = list(config.behaviours or behaviours)
    if target_event not in expected_behaviours:
        expected_behaviours.append(target_event)
    if old.behaviours == expected_behaviours:
        init["behaviour_logits"] = (None, old.behaviour_logits.detach())
        if len(old.history_behaviours) and old.config.history == config.history:
            init["history_weight"] = (None, old.history_weight.detach())
        if old.use_conversion and config.conversion:
            init["conversion_weight"] = (None, old.conversion_weight.detach())
        if old.use_cooccurrence and config.cooccurrence:
            init["cooccurrence_weight"] = (None, old.cooccurrence_weight.detach())
    log.debug(
        "warm start from %s: %s users and %s items carried over",
        previous,
        f"{shared['user']:,}",
        f"{shared[target_node]:,}",
    )
    return init, {"from": str(previous), "created_at": metadata.get("created_at"), "shared": shared}


def warm_start_source(model_dir: str | Path, embeddings: EmbeddingStageConfig) -> Path | None:
    """`model_dir` if a model there can warm-start one configured by `embeddings` (same target and dimension,
    ids recorded); None, with the reason logged, otherwise."""
    model_dir = Path(model_dir)
    if not is_model(model_dir):
        return None
    info = read_model_info(model_dir)
    reasons = []
    if not info.has_ids:
        reasons.append("it records no ids")
    if info.dim != embeddings.model.dim:
        reasons.append(f"its dimension is {info.dim}, not {embeddings.model.dim}")
    if (info.target_event, info.target_node) != (embeddings.target_event, embeddings.target_node):
        reasons.append("its target differs")
    if reasons:
        log.info("not warm-starting from %s: %s", model_dir, "; ".join(reasons))
        return None
    return model_dir
