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

import polars as pl
import torch
from safetensors.torch import load_file, save_file

from graphrec.artifacts import atomic_directory, code_version, utc_now_iso, write_json_atomic
from graphrec.graph import load_snapshot
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
) -> dict[str, Any] | None:
    """Train on `snapshot` and write the model artifact to `out`; returns its metadata (None on ranks > 0)."""
    model = model or ModelConfig()
    train = train or TrainConfig()
    out = Path(out)
    loaded = load_snapshot(snapshot)
    task = task_from_snapshot(loaded, None, target_event, target_node)
    val_task = None
    if validation is not None:
        window = Path(validation)
        targets = pl.read_parquet(window / f"{target_event}_{target_node}_targets.parquet")
        val_task = task_from_snapshot(load_snapshot(window / "snapshot"), targets, target_event, target_node)
        if (val_task.num_users, val_task.num_items) != (task.num_users, task.num_items):
            # Validation needs the same node index space as training: train on the validation window's snapshot.
            task = task_from_snapshot(load_snapshot(window / "snapshot"), None, target_event, target_node)
            log.info("training on the validation window's snapshot so node indices match its targets")
    trained, summary = train_embeddings(task, val_task, model, train, out.parent / f".{out.name}.work")
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
            "path": str(snapshot),
            "cutoff": loaded.manifest["cutoff"],
            "input_fingerprint": loaded.manifest.get("input_fingerprint", {}),
        },
        "training": summary,
        "behaviour_weights": dict(zip(trained.behaviours, trained.behaviour_weights().tolist(), strict=True)),
        "code_version": code_version(),
    }
    with atomic_directory(out) as staging:
        save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, staging / "model.safetensors")
        write_json_atomic(staging / "model.json", metadata)
    log.info("model written to %s", out)
    return metadata


def load_model(path: str | Path) -> tuple[MultiBehaviourGCN, dict[str, Any]]:
    """Rebuild a trained model from its artifact (attach a graph with `set_graph` before propagating)."""
    path = Path(path)
    metadata = json.loads((path / "model.json").read_text())
    hp = dict(metadata["hyperparameters"])
    hp["config"] = ModelConfig(**hp["config"])
    model = MultiBehaviourGCN(**hp)
    model.load_state_dict(load_file(path / "model.safetensors"))
    return model, metadata
