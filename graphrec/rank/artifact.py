"""The ranker's artifact: the one module that writes and reads a ranker directory.

Layout of a ranker directory:

    ranker.safetensors    the weights and the dense features' statistics (plain tensors: loading executes no code)
    ranker.json           kind, format, created_at, the architecture (everything to rebuild the module), the
                          feature schema (names and descriptions, in input order, and the feature settings), the
                          embedding store version and space the ranker was trained on, training config, metrics,
                          code version

Written atomically; read with torch only (no Lightning, no training code), so the ranking API loads it here.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from graphrec.artifacts import atomic_directory, code_version, utc_now_iso, write_json_atomic
from graphrec.errors import GraphrecError
from graphrec.rank.model import HomepageRanker, RankerConfig

RANKER_KIND = "homepage_ranker"
RANKER_FORMAT = 2  # 2: the dense inputs' log1p mask (dense_log) among the weights
WEIGHTS_FILE = "ranker.safetensors"
METADATA_FILE = "ranker.json"


class RankerArtifactError(GraphrecError):
    """A directory is not a readable ranker artifact."""


def save_ranker(model: HomepageRanker, out_dir: str | Path, info: dict[str, Any]) -> Path:
    """Write `model` and its metadata (`info`: features, embeddings, training, metrics) to `out_dir`."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    metadata = {
        "kind": RANKER_KIND,
        "format": RANKER_FORMAT,
        "created_at": utc_now_iso(),
        "architecture": {
            "num_dense": model.num_dense,
            "embedding_dim": model.embedding_dim,
            "num_slots": model.num_slots,
            "num_devices": model.num_devices,
            "config": asdict(model.config),
        },
        **info,
        "code_version": code_version(),
    }
    with atomic_directory(out_dir) as staging:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, staging / WEIGHTS_FILE)
        write_json_atomic(staging / METADATA_FILE, metadata)
    return out_dir


def read_ranker_info(path: str | Path) -> dict[str, Any]:
    """The ranker's metadata (no weights read)."""
    path = Path(path)
    meta_path = path / METADATA_FILE
    if not meta_path.exists():
        raise RankerArtifactError(f"{path}: not a ranker (no {METADATA_FILE}); train one with the ranker job")
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RankerArtifactError(f"{meta_path}: unreadable ({exc})") from None
    if metadata.get("kind") != RANKER_KIND:
        raise RankerArtifactError(f"{path}: not a ranker (kind {metadata.get('kind')!r})")
    if int(metadata.get("format", 0)) != RANKER_FORMAT:
        raise RankerArtifactError(
            f"{path}: ranker format {metadata.get('format')} is not the one this graphrec reads ({RANKER_FORMAT}); "
            "train the ranker again with this version"
        )
    return metadata


def load_ranker(path: str | Path) -> tuple[HomepageRanker, dict[str, Any]]:
    """Rebuild the ranker saved at `path` in eval mode, with its metadata."""
    from safetensors.torch import load_file

    path = Path(path)
    metadata = read_ranker_info(path)
    arch = metadata["architecture"]
    model = HomepageRanker(
        arch["num_dense"],
        arch["embedding_dim"],
        arch["num_slots"],
        arch["num_devices"],
        RankerConfig(**arch["config"]),
    )
    weights = path / WEIGHTS_FILE
    if not weights.exists():
        raise RankerArtifactError(f"{path}: {WEIGHTS_FILE} is missing")
    model.load_state_dict(load_file(weights))
    return model.eval(), metadata
