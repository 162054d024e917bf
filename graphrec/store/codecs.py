"""Compact encodings of online vectors: float16, and int8 with a per-vector scale."""

from __future__ import annotations

import numpy as np


def encode_compact(vectors: np.ndarray, dtype: str) -> list[bytes]:
    """Compact online copies. float16: the halves' bytes; int8: a float32 scale (max |x| / 127) followed by the
    rounded int8 values (symmetric per-vector quantisation)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if dtype == "float16":
        return [row.tobytes() for row in vectors.astype(np.float16)]
    if dtype == "int8":
        scale = np.abs(vectors).max(axis=1) / 127.0
        scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
        quantised = np.clip(np.rint(vectors / scale[:, None]), -127, 127).astype(np.int8)
        return [s.tobytes() + q.tobytes() for s, q in zip(scale, quantised, strict=True)]
    raise ValueError(f"no compact encoding for {dtype!r}")


def decode_compact(blob: bytes, dtype: str) -> np.ndarray:
    """Inverse of `encode_compact` for one vector (float32)."""
    if dtype == "float16":
        return np.frombuffer(blob, dtype=np.float16).astype(np.float32)
    scale = np.frombuffer(blob[:4], dtype=np.float32)[0]
    return np.frombuffer(blob[4:], dtype=np.int8).astype(np.float32) * scale
