"""The embedding model's artifact: the one module that writes and reads a model directory.

Layout of a model directory:

    model.safetensors     the weights (plain tensors: loading executes no code)
    model.json            kind, format, created_at, hyperparameters (everything to rebuild the module), the
                          training config, target, snapshot reference (path, cutoff, input fingerprint), training
                          summary, behaviour weights, warm start, metrics, code version
    ids/<node>.parquet    the original id of every embedding row (users and the target node type), so a later
                          model can warm-start from this one without its snapshot

The directory is written atomically (staged beside its place, fsynced, renamed in). Reading a model needs torch
only: neither Lightning nor the training jobs are imported, so export, the ranker and the API load models here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graphrec.artifacts import atomic_directory, code_version, utc_now_iso, write_json_atomic
from graphrec.embed.config import ModelConfig
from graphrec.errors import GraphrecError

if TYPE_CHECKING:
    import polars as pl

    from graphrec.embed.model import MultiBehaviourGCN
    from graphrec.graph.snapshot import Snapshot

MODEL_KIND = "embedding_model"
MODEL_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
METADATA_FILE = "model.json"
IDS_DIR = "ids"


class ModelArtifactError(GraphrecError):
    """A directory is not a readable model artifact (missing files, or not a graphrec model)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a model artifact says about itself, read from `model.json` alone (cheap: no weights, no torch)."""

    path: Path
    metadata: dict[str, Any]

    @property
    def target_event(self) -> str:
        """The behaviour the model was trained to predict (e.g. purchase)."""
        return self.metadata["target"]["event"]

    @property
    def target_node(self) -> str:
        """The node type it ranks: item or content."""
        return self.metadata["target"]["node"]

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return int(self.metadata["hyperparameters"]["config"]["dim"])

    @property
    def snapshot_path(self) -> str:
        """The snapshot it was trained on, as recorded (a path relative to where training ran, or absolute)."""
        return self.metadata["snapshot"]["path"]

    @property
    def has_ids(self) -> bool:
        """Whether the artifact records its rows' original ids (models written before warm starts do not)."""
        return (self.path / IDS_DIR).is_dir()

    def ids(self, node: str) -> pl.Series:
        """The original ids of the model's embedding rows for `node` (user or the target node type), in row order."""
        import polars as pl

        path = self.path / IDS_DIR / f"{node}.parquet"
        if not path.exists():
            raise ModelArtifactError(f"{path}: missing; the model predates recorded ids, retrain it once")
        return pl.read_parquet(path).to_series()


def is_model(path: str | Path) -> bool:
    """Whether `path` holds a model artifact."""
    return (Path(path) / METADATA_FILE).is_file()


def read_model_info(path: str | Path) -> ModelInfo:
    """A model artifact's metadata, without loading its weights."""
    path = Path(path)
    file = path / METADATA_FILE
    if not file.is_file():
        raise ModelArtifactError(f"{path}: not a model artifact (no {METADATA_FILE})")
    try:
        metadata = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelArtifactError(f"{file}: unreadable ({exc})") from exc
    if metadata.get("kind", MODEL_KIND) != MODEL_KIND:
        raise ModelArtifactError(f"{file}: a {metadata.get('kind')!r}, not an embedding model")
    if metadata.get("format", MODEL_FORMAT) > MODEL_FORMAT:
        raise ModelArtifactError(
            f"{file}: artifact format {metadata['format']}, newer than this graphrec reads ({MODEL_FORMAT}); upgrade"
        )
    return ModelInfo(path, metadata)


def save_model(
    model: MultiBehaviourGCN,
    out: str | Path,
    snapshot: Snapshot,
    snapshot_path: str | Path,
    target_event: str,
    target_node: str,
    train_config: dict[str, Any],
    training: dict[str, Any],
    warm_start: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `model`, trained on `snapshot`, as a model artifact at `out` (atomically); returns its metadata."""
    import numpy as np
    from safetensors.torch import save_file

    metadata = {
        "kind": MODEL_KIND,
        "format": MODEL_FORMAT,
        "created_at": utc_now_iso(),
        "hyperparameters": model.hyperparameters(),
        "train": train_config,
        "target": {"event": target_event, "node": target_node},
        "snapshot": {
            "path": str(snapshot_path),
            "cutoff": snapshot.manifest["cutoff"],
            "input_fingerprint": snapshot.manifest.get("input_fingerprint", {}),
        },
        "training": training,
        "behaviour_weights": dict(zip(model.behaviours, model.behaviour_weights().tolist(), strict=True)),
        "warm_start": warm_start,
        "metrics": metrics or {},
        "code_version": code_version(),
    }
    with atomic_directory(out) as staging:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, staging / WEIGHTS_FILE)
        (staging / IDS_DIR).mkdir()
        for node, count in (("user", model.num_users), (target_node, model.num_items)):
            snapshot.ids_of(node, np.arange(count)).to_frame().write_parquet(staging / IDS_DIR / f"{node}.parquet")
        write_json_atomic(staging / METADATA_FILE, metadata)
    return metadata


def load_model(path: str | Path) -> tuple[MultiBehaviourGCN, dict[str, Any]]:
    """Rebuild a trained model from its artifact (attach a graph with `set_graph` before propagating)."""
    from safetensors.torch import load_file

    from graphrec.embed.model import MultiBehaviourGCN

    info = read_model_info(path)
    weights = info.path / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelArtifactError(f"{weights}: missing; the model artifact is incomplete")
    hp = dict(info.metadata["hyperparameters"])
    # Artifacts written before the conversion or co-occurrence terms existed have none; those written before
    # `content_inputs` existed gave every item its content part.
    old = {"conversion": False, "cooccurrence": False, "content_inputs": "all"}
    hp["config"] = ModelConfig(**{**old, **hp["config"]})
    model = MultiBehaviourGCN(**hp)
    model.load_state_dict(load_file(weights))
    return model, info.metadata
