"""Point-in-time training rows of the ranker: each logged impression with what was knowable at its time.

A row joins the impression to (a) the behaviour features of `graphrec.rank.features` (events and impressions
strictly before it), (b) the user's and the module's embeddings of the version live at its time, through the
feature store's historical retrieval (the newest version whose cutoff is <= the impression: learned only from
events before it; `graphrec backfill` publishes such versions), and (c) its context (hour, weekday, device) and
slot. Users and modules a version lacks get zero vectors and a 0 in `has_user_embedding` / `has_module_embedding`;
`embedding_cutoff` is the cutoff of the version joined to the row (null where none is older than the row), and
`module_launch` the module's launch where the content table has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from graphrec.data.config import DEVICES
from graphrec.data.validation import read_feedback, read_validated
from graphrec.errors import InputError
from graphrec.rank.features import RankFeatureConfig, behaviour_features, encode_ids, feature_descriptions

KEYS = ("row_id", "request_id", "user_id", "content_id", "slot", "timestamp", "device", "clicked")
# The impressions' columns the behaviour features read, as the rows and as their history.
HISTORY_COLUMNS = ("user_id", "content_id", "session_id", "slot", "timestamp", "device", "clicked")
DAY_SECONDS = 86_400
EMBEDDING_FLAGS = ("has_user_embedding", "has_module_embedding")


class RowVectors:
    """The embedding of each selected row, gathered on demand from one table of vectors: `table[rows]` without
    holding a [rows, dim] copy (a 1M-event shop's 1.8M impressions would take 0.9 GB for two 64-dim embeddings;
    the row indexes take 7 MB). Indexing gives a numpy array; `np.asarray` the whole matrix."""

    def __init__(self, table: np.ndarray, rows: np.ndarray) -> None:
        self.table, self.rows = table, rows

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), self.table.shape[1])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        return self.table[self.rows[index]]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        gathered = self.table[self.rows]
        return gathered if dtype is None else gathered.astype(dtype)


class RowColumns:
    """The dense features of the selected rows, [rows, features] float32, gathered on demand from one array per
    feature (the frame's own column buffers, not copied): a batch costs one gather per feature, and no [rows,
    features] copy of the training, test or final-fit rows is ever held (a 10M-event shop's 15M final-fit rows
    would take 3.1 GB, on top of the frame that already holds them). `rows` None selects every row. Indexing by
    row positions (an index array, a boolean mask or a slice; then optionally features) gives a numpy array;
    `np.asarray` the whole matrix."""

    def __init__(self, columns: list[np.ndarray], rows: np.ndarray | None, height: int) -> None:
        self.columns, self.rows, self.height = columns, rows, height

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height if self.rows is None else len(self.rows), len(self.columns))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        features = slice(None)
        if isinstance(index, tuple):  # [rows, features]
            index, features = index
        single = np.isscalar(features)
        if isinstance(features, slice):
            columns = self.columns[features]
        else:
            columns = [self.columns[int(k)] for k in np.atleast_1d(features)]
        picked = self._positions(index)
        n = len(range(*picked.indices(self.height))) if isinstance(picked, slice) else len(picked)
        out = np.empty((len(columns), n), np.float32)
        for j, column in enumerate(columns):
            if isinstance(picked, slice):
                out[j] = column[picked]
            else:
                np.take(column, picked, out=out[j])
        # Filled feature by feature (contiguous writes), handed out as the [rows, features] view.
        return out[0] if single else out.T

    def _positions(self, index) -> slice | np.ndarray:
        """Row positions in the columns of the selected rows `index` (a slice, positions or a boolean mask)."""
        if isinstance(index, slice):
            return self.rows[index] if self.rows is not None else index
        if np.isscalar(index):
            raise TypeError("RowColumns: index rows with a slice, an index array or a mask, not a single row")
        index = np.asarray(index)
        if index.dtype == np.bool_:
            if len(index) != len(self):
                raise IndexError(f"RowColumns: a mask of {len(index):,} for {len(self):,} rows")
            index = np.flatnonzero(index)
        index = index.astype(np.int64, copy=False)
        return self.rows[index] if self.rows is not None else index

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = np.empty(self.shape, np.float32)  # row-major, filled column by column: one copy, not two
        picked = self._positions(slice(None))
        for j, column in enumerate(self.columns):
            whole[:, j] = column[picked]
        return whole if dtype is None else whole.astype(dtype)


@dataclass
class RankRows:
    """Training rows: `frame` holds keys, label and features; with embeddings, `vectors` holds one table per side
    ("user", "module": [versions' rows + 1, dim], row 0 zeros) and the frame's `user_vector_row` /
    `module_vector_row` index them."""

    frame: pl.DataFrame
    feature_names: list[str]
    vectors: dict[str, np.ndarray] | None = None
    origin: int | None = None
    """The epoch second of day 0 of the rows' day indexes: the UTC midnight before the log's first impression, which
    is earlier than the first row where the first days are history only (None: the first row's midnight)."""
    history_only: int = 0
    """Impressions of those first days: the rows' history, not rows."""
    _columns: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def embedding_dim(self) -> int:
        return int(self.vectors["user"].shape[1]) if self.vectors else 0

    def feature_column(self, name: str) -> np.ndarray:
        """One feature of every row as a float32 array: the frame's own buffer where it is one Float32 chunk without
        nulls (a view), else a copy made once and kept (a frame read from several Parquet row groups: rechunk it
        first to hold its features once). The frame is not to be replaced or changed once the rows are built."""
        if name not in self._columns:
            series = self.frame[name]
            if series.dtype != pl.Float32 or series.n_chunks() > 1 or series.null_count():
                series = series.cast(pl.Float32).rechunk()
            self._columns[name] = series.to_numpy()
        return self._columns[name]

    @cached_property
    def user_codes(self) -> np.ndarray:
        """Each row's user as an integer (the same for the same user; integer ids as they are): what per-user
        metrics group by, without a Python string per row."""
        users = self.frame["user_id"]
        codes = users if users.dtype.is_integer() else users.cast(pl.String).cast(pl.Categorical).to_physical()
        return codes.to_numpy()

    @cached_property
    def device_codes(self) -> np.ndarray:
        """Each row's device as its index in `DEVICES` (int8; 0 for a missing device or one not among them),
        computed once, on the Categorical's codes rather than a string per row."""
        index = {device: i for i, device in enumerate(DEVICES)}
        return self.frame["device"].replace_strict(index, default=0, return_dtype=pl.Int8).to_numpy()

    def arrays(
        self,
        rows: np.ndarray | None = None,
        embeddings: bool = True,
        features: list[str] | None = None,
        keys: bool = True,
    ):
        """Model inputs of the selected rows: dense [n, F] (`RowColumns`), user and module vectors (`RowVectors`,
        [n, d]; or None), slot (int32), device index (int8), clicked, and with `keys` the request key and user code
        (`user_codes`) for per-request and per-user metrics (training reads neither: 16 bytes a row)."""

        def column(name: str) -> pl.Series:
            series = self.frame[name]
            return series if rows is None else series.gather(rows)

        names = features if features is not None else self.feature_names
        dense = RowColumns([self.feature_column(name) for name in names], rows, self.frame.height)
        user = module = None
        if embeddings and self.embedding_dim:
            user = RowVectors(self.vectors["user"], column("user_vector_row").to_numpy())
            module = RowVectors(self.vectors["module"], column("module_vector_row").to_numpy())
        out = {
            "dense": dense,
            "user": user,
            "module": module,
            "slot": column("slot").cast(pl.Int32).to_numpy(),
            "device": self.device_codes if rows is None else self.device_codes[rows],
            "clicked": column("clicked").to_numpy().astype(np.float32),
        }
        if keys:
            out["request"] = column("request_id").to_numpy()
            out["user_id"] = self.user_codes if rows is None else self.user_codes[rows]
        return out


def read_impressions(validated: str | Path, columns: list[str] | None = None, encoded: bool = False) -> pl.DataFrame:
    """The validated impressions, in time order: `columns` only (default: all; they must include `timestamp`,
    `request_id` and `slot`, the order's keys). `encoded`: the ids as 4-byte codes (`encode_ids`), the device as a
    Categorical and the slot as Int32, converted as the file is read, so the log's strings are never held at once
    (a 10M-event shop's 18M impressions, with the ranker's columns: a peak of 1.5 GB read whole, 0.9 GB this way).
    The frame comes back in one chunk: queries over a frame of many chunks copy it (the ranker's impression
    features peaked 0.7 GB higher)."""
    scan = pl.scan_parquet(_impressions_file(validated))
    if columns is not None:
        scan = scan.select(columns)
    if encoded:
        schema = scan.collect_schema()
        narrow = [pl.col(c).cast(dtype) for c, dtype in (("device", pl.Categorical), ("slot", pl.Int32)) if c in schema]
        scan = encode_ids(scan).with_columns(narrow)
    frame = scan.collect(engine="streaming").rechunk()
    # Validation writes them in this order already: checked rather than sorted again, a second copy of every
    # impression (2 GB for a 10M-event shop's 18M).
    keys = ["timestamp", "request_id", "slot"]
    return frame if _in_order(frame, keys) else frame.sort(*keys)


def _impressions_file(validated: str | Path) -> Path:
    """The validated impressions' file, or an InputError saying it is missing."""
    path = Path(validated) / "impressions.parquet"
    if not path.exists():
        raise InputError(f"{validated}: no impressions.parquet; the ranker trains on homepage impression logs")
    return path


def _in_order(frame: pl.DataFrame, keys: list[str], block_rows: int = 1 << 20) -> bool:
    """Whether `frame`'s rows are sorted by `keys` (polars compares them as one struct), checked a block of rows at
    a time, each block overlapping the one before by a row: the whole log's struct took 1 GB for 18M rows."""
    for start in range(0, max(frame.height, 1), block_rows):
        block = frame.slice(max(start - 1, 0), block_rows + 1).select(pl.struct(keys)).to_series()
        if not block.is_sorted():
            return False
    return True


def impression_rows(
    validated: str | Path,
    store: str | Path | None = None,
    feature_store=None,
    features: RankFeatureConfig | None = None,
    skip_days: int = 0,
) -> RankRows:
    """Training rows for the validated impressions from `skip_days` days after the first impression's UTC midnight
    (the earlier ones are the later rows' history, never rows themselves); embeddings from `store`'s history where
    given."""
    features = features or RankFeatureConfig()
    events, items, content, _ = read_validated(validated)
    if content is None:
        raise InputError(f"{validated}: no content.parquet; the ranker needs the content modules' catalog")
    # The features read ids as 4-byte codes (`encode_ids`) and the keys share the history's other columns, narrow:
    # the device a category (4 bytes a row, not a string), the slot 32-bit; sessions' and propensities' columns
    # are not read. The events' strings are let go before the features run.
    schema = pl.read_parquet_schema(_impressions_file(validated))
    id_types = {c: schema[c] for c in ("user_id", "content_id")}
    columns = ["request_id", *[c for c in HISTORY_COLUMNS if c in schema]]
    impressions = read_impressions(validated, columns, encoded=True)
    origin = day_origin(impressions["timestamp"])
    since = datetime.fromtimestamp(origin + skip_days * DAY_SECONDS, tz=UTC)
    first_row = int(impressions["timestamp"].search_sorted(since, side="left"))  # they are in time order
    if first_row >= impressions.height:
        days = (impressions["timestamp"].dt.epoch("s").max() - origin) // DAY_SECONDS + 1
        raise InputError(
            f"{Path(validated) / 'impressions.parquet'}: the {impressions.height:,} impressions span {days} days, all "
            f"of them within the {skip_days} skipped days (ranker.split.skip_days): no row is left to train on"
        )
    history = impressions.with_row_index("row_id").with_columns(pl.col("row_id").cast(pl.Int64))
    del impressions
    events = encode_ids(events.drop("device", strict=False))
    rows = history.slice(first_row)
    feedback = read_feedback(validated)
    computed = behaviour_features(rows, events, history.lazy(), content, items, features, feedback)
    del events
    # The keys get their ids back as they were: the feature store and the policy value look them up by value.
    keys = rows.select(*KEYS).with_columns(pl.col(c).cast(dtype) for c, dtype in id_types.items())
    del rows, history
    names = list(feature_descriptions(features))
    # Float32, as the model reads them: half the memory of the computed Float64 (exact for counts below 2^24).
    computed = computed.select("row_id", *[pl.col(name).cast(pl.Float32) for name in names])
    # `behaviour_features` answers in input order: the columns are set beside the keys as they are (a join would
    # copy every feature of every row once more).
    if not computed["row_id"].equals(keys["row_id"]):
        raise AssertionError("behaviour_features: rows out of input order")
    frame = keys.hstack(computed.drop("row_id"))
    del keys, computed
    if "launch" in content.columns:
        # Looked up on the one key column and set beside the others: a join of the frame would copy every column.
        launch = content.select("content_id", pl.col("launch").alias("module_launch"))
        keys = frame.select("content_id").join(launch, on="content_id", how="left", maintain_order="left")
        frame = frame.with_columns(keys["module_launch"])
    vectors = None
    if store is not None:
        frame, vectors = with_embeddings(frame, store, feature_store)
        names += list(EMBEDDING_FLAGS)
    return RankRows(frame, names, vectors, origin, first_row)


def day_origin(timestamps: pl.Series) -> int:
    """The epoch second of the UTC midnight before the first of `timestamps`: day 0 of the rows' day indexes."""
    first = int(timestamps.dt.epoch("s").min())
    return first - first % DAY_SECONDS


def with_embeddings(
    frame: pl.DataFrame, store: str | Path, feature_store
) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """`frame` (rows with `user_id`, `content_id`, `timestamp`) with the point-in-time user and module embeddings
    of `store` as rows of its vector tables (`user_vector_row`, `module_vector_row`: 0, the zero vector, where no
    version holds the id), their flags, versions and `embedding_cutoff`; and the tables ("user", "module"). Training
    rows and the policy value's candidate rows share it, so both meet the same versions."""
    from graphrec.store.config import FeatureStoreConfig
    from graphrec.store.feast_repo import historical_vectors

    feature_store = feature_store or FeatureStoreConfig()
    tables, columns, versions, answered = {}, [], {}, 0
    for entity, column, name in (("user", "user_id", "user"), ("content", "content_id", "module")):
        requests = frame.select(column, pl.col("timestamp").alias("event_timestamp"))
        answer, tables[name] = historical_vectors(store, feature_store, entity, requests)
        versions[name] = answer["model_version"]
        answered += int((answer["vector_row"] > 0).sum())
        columns += [
            answer["vector_row"].alias(f"{name}_vector_row"),
            (answer["vector_row"] > 0).cast(pl.Float32).alias(f"has_{name}_embedding"),
            # Categorical: a handful of versions over millions of rows (4 bytes a row, not a string each).
            answer["model_version"].cast(pl.Categorical).alias(f"{name}_embedding_version"),
        ]
    dims = {table.shape[1] for table in tables.values() if len(table) > 1}
    if not answered:
        raise InputError(f"{store}: no embedding version is older than any impression; run `graphrec backfill`")
    if len(dims) > 1:
        raise InputError(f"{store}: the user and content embeddings differ in size ({sorted(dims)})")
    dim = dims.pop()
    tables = {name: table if len(table) > 1 else np.zeros((1, dim), np.float32) for name, table in tables.items()}
    cutoffs = _version_cutoffs(store)
    live = versions["user"].fill_null(versions["module"])
    columns.append(
        live.replace_strict(cutoffs, default=None, return_dtype=pl.String)
        .str.to_datetime(time_zone="UTC")
        .alias("embedding_cutoff")
    )
    return frame.with_columns(columns), tables


def _version_cutoffs(store: str | Path) -> dict[str, str]:
    """Each version's snapshot cutoff, from its manifest."""
    from graphrec.store.versions import list_versions, read_manifest

    return {version: read_manifest(store, version)["cutoff"] for version in list_versions(store)}
