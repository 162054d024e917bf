"""The training job: fit embeddings on a graph snapshot and save the model as an artifact.

`graphrec train --snapshot artifacts/default/split/test/snapshot --out artifacts/model` trains on every edge of
the snapshot; with `--validation` (a split window directory holding `snapshot/` and its target table) it
early-stops on that window's NDCG. The artifact (`model.safetensors`, `model.json`) records the hyperparameters,
the training config, the snapshot's manifest fingerprint and the validation score, and is written atomically.
With `--train.strategy ddp --train.devices 2` Lightning runs two processes; only rank 0 writes the artifact.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file

from graphrec.artifacts import atomic_directory, code_version, utc_now_iso, write_json_atomic
from graphrec.errors import GraphrecError
from graphrec.graph import Snapshot, load_snapshot
from graphrec.models import ModelConfig, MultiBehaviourGCN
from graphrec.tasks import task_from_snapshot
from training.system import TrainConfig, train_embeddings

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
        targets = pl.read_parquet(window / f"{target_event}_{target_node}_targets.parquet")
        val_task = task_from_snapshot(load_snapshot(window / "snapshot"), targets, target_event, target_node)
        if (val_task.num_users, val_task.num_items) != (task.num_users, task.num_items):
            # Validation needs the same node index space as training: train on the validation window's snapshot.
            trained_on = window / "snapshot"
            loaded = load_snapshot(trained_on)
            task = task_from_snapshot(loaded, None, target_event, target_node)
            log.info("training on the validation window's snapshot so node indices match its targets")
    init, warm = (None, None)
    if warm_start is not None:
        init, warm = warm_start_parameters(warm_start, model, loaded, target_node, task.behaviours, target_event)
    trained, summary = train_embeddings(task, val_task, model, train, out.parent / f".{out.name}.work", init=init)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank != 0:  # under DDP every process trains; one writes the artifact
        return None
    metadata = {
        "kind": "embedding_model",
        "created_at": utc_now_iso(),
        "hyperparameters": trained.hyperparameters(),
        "train": asdict(train),
        "target": {"event": target_event, "node": target_node},
        "snapshot": {
            "path": str(trained_on),
            "cutoff": loaded.manifest["cutoff"],
            "input_fingerprint": loaded.manifest.get("input_fingerprint", {}),
        },
        "training": summary,
        "behaviour_weights": dict(zip(trained.behaviours, trained.behaviour_weights().tolist(), strict=True)),
        "warm_start": warm,
        "code_version": code_version(),
    }
    with atomic_directory(out) as staging:
        save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, staging / "model.safetensors")
        # The ids of every embedding row, so a later model can warm-start from this one without its snapshot.
        (staging / "ids").mkdir()
        for node, count in (("user", trained.num_users), (target_node, trained.num_items)):
            loaded.ids_of(node, np.arange(count)).to_frame().write_parquet(staging / "ids" / f"{node}.parquet")
        write_json_atomic(staging / "model.json", metadata)
    log.info("model written to %s", out)
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
    if old.config.dim != config.dim:
        raise GraphrecError(
            f"{previous}: dimension {old.config.dim}, cannot warm-start a model of dimension {config.dim}"
        )
    init: dict[str, tuple[torch.Tensor | None, torch.Tensor]] = {}
    shared = {}
    for node, name in (("user", "user_embedding.weight"), (target_node, "item_embedding.weight")):
        path = previous / "ids" / f"{node}.parquet"
        if not path.exists():
            raise GraphrecError(f"{path}: missing; the model predates warm starts, train once without --warm_start")
        old_ids = pl.read_parquet(path).to_series()
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
    log.info(
        "warm start from %s: %s users and %s items carried over",
        previous,
        f"{shared['user']:,}",
        f"{shared[target_node]:,}",
    )
    return init, {"from": str(previous), "created_at": metadata.get("created_at"), "shared": shared}


def load_model(path: str | Path) -> tuple[MultiBehaviourGCN, dict[str, Any]]:
    """Rebuild a trained model from its artifact (attach a graph with `set_graph` before propagating)."""
    path = Path(path)
    metadata = json.loads((path / "model.json").read_text())
    hp = dict(metadata["hyperparameters"])
    # Artifacts written before the conversion term existed have none.
    hp["config"] = ModelConfig(**{"conversion": False, **hp["config"]})
    model = MultiBehaviourGCN(**hp)
    model.load_state_dict(load_file(path / "model.safetensors"))
    return model, metadata
