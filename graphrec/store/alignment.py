"""Drift control between embedding versions: orthogonal Procrustes alignment onto the live version, and the
stability it leaves (mean cosine of the same entity, top-k neighbour overlap).

A retrained model lives in a new basis. One rotation for users, items and modules keeps every dot product within
the version unchanged; a version whose aligned mean cosine reaches `min_cosine` shares the previous version's
space, otherwise it opens a new one and consumers trained on the old space must not mix them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch
from scipy.linalg import orthogonal_procrustes

from graphrec.embed.vectors import ENTITIES, ID_COLUMN, EmbeddingSet
from graphrec.store.config import ExportConfig


def _shared(previous: EmbeddingSet, new: EmbeddingSet, entity: str) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (previous, new) of the entities present in both sets."""
    column = ID_COLUMN[entity]
    left = pl.DataFrame({column: previous.ids[entity]}).with_row_index("prev")
    right = pl.DataFrame({column: new.ids[entity].cast(previous.ids[entity].dtype, strict=False)}).with_row_index("new")
    joined = left.join(right, on=column, how="inner")
    return joined["prev"].to_numpy(), joined["new"].to_numpy()


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def _neighbour_overlap(
    a: np.ndarray, b: np.ndarray, k: int, queries: int, pool: int, rng: np.random.Generator
) -> float | None:
    """Mean |top-k cosine neighbours in a ∩ in b| / k for `queries` rows, neighbours searched among `pool` rows
    sampled from the shared entities (rows align between a and b); a pool keeps it O(queries x pool) at any
    catalogue size."""
    n = len(a)
    if n <= k + 1:
        return None
    members = np.sort(rng.choice(n, size=min(pool, n), replace=False))
    a_unit, b_unit = torch.from_numpy(_unit(a[members])), torch.from_numpy(_unit(b[members]))
    chosen = torch.from_numpy(rng.choice(len(members), size=min(queries, len(members)), replace=False))
    overlaps = []
    for block in chosen.split(512):
        tops = []
        for unit in (a_unit, b_unit):
            scores = unit[block] @ unit.T
            scores[torch.arange(len(block)), block] = -torch.inf  # not its own neighbour
            tops.append(torch.topk(scores, k, dim=1).indices)
        # |A ∩ B| per row: compare every pair of the two k-lists.
        overlaps.append((tops[0][:, :, None] == tops[1][:, None, :]).any(2).float().mean(1))
    return float(torch.cat(overlaps).mean())


def align_to(previous: EmbeddingSet, new: EmbeddingSet, config: ExportConfig) -> tuple[EmbeddingSet, dict[str, Any]]:
    """Rotate `new` onto `previous` (one orthogonal matrix for every entity type) and measure stability.

    Returns the aligned set and a drift report: shared entities, mean cosine before and after alignment, top-k
    neighbour overlap (rotation-invariant) per entity type, and whether the versions are compatible.
    """
    report: dict[str, Any] = {"previous_version": previous.info.get("version"), "aligned": False, "entities": {}}
    if previous.dim != new.dim:
        report.update(compatible=False, reason=f"dimension changed from {previous.dim} to {new.dim}")
        return new, report
    pairs = {
        entity: _shared(previous, new, entity) for entity in ENTITIES if entity in previous.ids and entity in new.ids
    }
    shared_total = sum(len(p) for p, _ in pairs.values())
    if shared_total < 2 * new.dim:
        report.update(compatible=False, reason=f"only {shared_total} shared entities, fewer than 2 x dim")
        return new, report
    source = np.concatenate([new.vectors[e][n] for e, (_, n) in pairs.items()]).astype(np.float64)
    target = np.concatenate([previous.vectors[e][p] for e, (p, _) in pairs.items()]).astype(np.float64)
    rotation = np.eye(new.dim)
    if config.align:
        rotation, _ = orthogonal_procrustes(source, target)
        report["aligned"] = True
    aligned = {e: (v.astype(np.float64) @ rotation).astype(np.float32) for e, v in new.vectors.items()}
    rng = np.random.default_rng(config.seed)
    cosines = []
    for entity, (prev_rows, new_rows) in pairs.items():
        before = np.sum(_unit(previous.vectors[entity][prev_rows]) * _unit(new.vectors[entity][new_rows]), axis=1)
        after = np.sum(_unit(previous.vectors[entity][prev_rows]) * _unit(aligned[entity][new_rows]), axis=1)
        cosines.append(after)
        report["entities"][entity] = {
            "shared": len(prev_rows),
            "mean_cosine_before": round(float(before.mean()), 4) if len(before) else None,
            "mean_cosine": round(float(after.mean()), 4) if len(after) else None,
            f"top{config.neighbours}_overlap": _round(
                _neighbour_overlap(
                    previous.vectors[entity][prev_rows],
                    new.vectors[entity][new_rows],
                    config.neighbours,
                    config.stability_sample,
                    config.stability_pool,
                    rng,
                )
            ),
        }
    mean_cosine = float(np.concatenate(cosines).mean())
    report["mean_cosine"] = round(mean_cosine, 4)
    report["compatible"] = bool(config.align and mean_cosine >= config.min_cosine)
    if not report["compatible"]:
        report["reason"] = f"mean cosine {mean_cosine:.3f} after alignment is below min_cosine {config.min_cosine}"
    inductive = new.inductive.rotated(rotation) if new.inductive is not None else None
    return EmbeddingSet(new.ids, aligned, new.cutoff, new.info, inductive), report


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
