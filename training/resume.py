"""Resuming a killed training run: a run's fingerprint (model, settings, data, warm start) decides whether the
checkpoints in its directory are continued or moved aside."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch

from graphrec.artifacts import write_json_atomic
from graphrec.graph.tasks import RecTask
from training.config import TrainConfig

log = logging.getLogger("graphrec.training")


def _task_digest(task: RecTask) -> str:
    digest = hashlib.sha256()
    for behaviour in sorted(task.edges):
        for tensor in task.edges[behaviour]:
            digest.update(behaviour.encode())
            digest.update(tensor.numpy().tobytes())
    for name in sorted(task.item_features):
        digest.update(task.item_features[name].numpy().tobytes())
    return digest.hexdigest()


def _init_digest(init) -> str | None:
    if not init:
        return None
    digest = hashlib.sha256()
    for name in sorted(init):
        rows, values = init[name]
        digest.update(name.encode())
        if rows is not None:
            digest.update(rows.numpy().tobytes())
        digest.update(values.detach().numpy().tobytes())
    return digest.hexdigest()


def same_run(out_dir: Path, hyperparameters: dict, train_config: TrainConfig, task: RecTask, init=None) -> bool:
    """True when `out_dir` holds a checkpoint of this very run (same model, settings and data), so a killed run
    resumes; checkpoints of a different run are moved aside (kept as `checkpoints.stale-*`) and training starts
    fresh instead of continuing someone else's state."""
    key = {
        "hyperparameters": hyperparameters,
        # More epochs continue a run; the hardware it runs on does not change it.
        "train": {
            k: v for k, v in asdict(train_config).items() if k not in ("epochs", "devices", "strategy", "accelerator")
        },
        "data": _task_digest(task),
        "init": _init_digest(init),
    }
    marker = out_dir / "run_key.json"
    checkpoints = out_dir / "checkpoints"
    rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    same = marker.exists() and json.loads(marker.read_text()) == json.loads(json.dumps(key, default=str))
    if (checkpoints / "last.ckpt").exists() and same:
        epoch = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)["epoch"]
        if epoch < train_config.epochs:
            return True
    if rank == 0:
        if checkpoints.exists():
            stale = out_dir / f"checkpoints.stale-{int(time.time())}"
            os.rename(checkpoints, stale)
            log.info("%s holds checkpoints of a different run; moved to %s, training from scratch", out_dir, stale)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(marker, key)
    return False
