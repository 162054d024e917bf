"""Diversity re-ranking of a scored page: maximal marginal relevance over module embeddings and per-type caps.

MMR (Carbonell & Goldstein 1998, "The use of MMR, diversity-based reranking for reordering documents and producing
summaries"): each slot takes the module maximising lambda * relevance - (1 - lambda) * (its highest cosine to a
module already placed). Caps hold at most `max_per_type` modules of one module type in the slots; modules over the
cap follow the slots in score order, so nothing is dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphrec.rank.online import FeatureState


def rerank(
    order: np.ndarray,
    logits: np.ndarray,
    known: np.ndarray,
    module_vectors: np.ndarray | None,
    state: FeatureState,
    slots: int,
    diversity: dict[str, Any],
) -> np.ndarray:
    """Row indices in page order: the first `slots` chosen by MMR (`diversity["mmr_lambda"]` in [0, 1], 1 = by
    relevance alone) under `diversity["max_per_type"]`, then the rest by score."""
    mmr = diversity.get("mmr_lambda")
    cap = diversity.get("max_per_type")
    order = np.asarray(order, np.int64)
    relevance = 1 / (1 + np.exp(-logits[order]))  # P(click | seen), on the same scale as a cosine
    vectors = None
    if mmr is not None and module_vectors is not None:
        vectors = module_vectors[known[order]]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    types = [state.module_type[int(m)] for m in known[order]]
    available = np.ones(len(order), bool)  # positions in `order`
    nearest = np.full(len(order), -1.0)  # each position's highest cosine to a placed module
    placed, per_type = [], {}
    for _ in range(min(slots, len(order))):
        allowed = available.copy()
        if cap is not None:
            allowed &= np.array([per_type.get(t, 0) < cap for t in types])
        if not allowed.any():
            break
        value = relevance.copy()
        if vectors is not None and placed:
            value = mmr * relevance - (1 - mmr) * np.maximum(nearest, 0.0)
        value[~allowed] = -np.inf
        position = int(np.argmax(value))
        placed.append(position)
        available[position] = False
        per_type[types[position]] = per_type.get(types[position], 0) + 1
        if vectors is not None:
            nearest = np.maximum(nearest, vectors @ vectors[position])
    rest = [p for p in range(len(order)) if available[p]]
    return order[np.array(placed + rest, np.int64)]
