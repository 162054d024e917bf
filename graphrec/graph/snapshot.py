"""Leak-free heterogeneous graph snapshots: events strictly before a cutoff -> PyG `HeteroData` on disk.

Node types: user, item, content, and category / brand where the catalog has them. Edge types: one per behaviour
and target (`('user', 'view', 'item')`, `('user', 'click', 'content')`, ...), the shoppers' signed feedback on
modules (`('user', 'more_like_this', 'content')`, `('user', 'hide', 'content')`), containment edges
`('content', 'features', 'item')`, `('item', 'in_category', 'category')`, `('item', 'of_brand', 'brand')`, and
their reverses `rev_<rel>`. Each user edge carries `count`, `last_timestamp` (epoch seconds) and `weight`, the sum
of exp(-ln 2 * age / half_life) over its events, age measured from the cutoff.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from safetensors.torch import load_file, save_file
from torch_geometric.data import HeteroData

from graphrec.artifacts import atomic_directory, code_version, utc_now_iso, write_json_atomic
from graphrec.data.schema import EVENT_TYPE_DTYPE, EVENT_TYPES, ID_COLUMN, VECTOR_SUFFIX
from graphrec.errors import ConfigError, InputError
from graphrec.graph.config import GraphConfig

EdgeType = tuple[str, str, str]
NODE_ID_COLUMN = {**ID_COLUMN, "category": "category", "brand": "brand"}
EDGE_ATTRS = ("count", "last_timestamp", "weight")
SNAPSHOT_FORMAT = 1


@dataclass
class Snapshot:
    """A graph snapshot: the `HeteroData`, id maps per node type (index <-> original id) and its manifest."""

    data: HeteroData
    node_ids: dict[str, pl.DataFrame]
    manifest: dict[str, Any] = field(default_factory=dict)

    def index_of(self, node_type: str, ids: pl.Series | list) -> pl.Series:
        """Map original ids to node indices; unknown ids map to null."""
        column = NODE_ID_COLUMN[node_type]
        table = self.node_ids[node_type]
        query = pl.DataFrame({column: pl.Series(ids, dtype=table[column].dtype)}).with_row_index("_pos")
        joined = query.join(table.select(column, "index"), on=column, how="left").sort("_pos")
        return joined["index"]

    def ids_of(self, node_type: str, index: torch.Tensor | np.ndarray | list) -> pl.Series:
        """Map node indices back to original ids (values and type as in the input)."""
        column = NODE_ID_COLUMN[node_type]
        return self.node_ids[node_type][column].gather(np.asarray(index, dtype=np.int64))


def _to_utc(cutoff: datetime | str) -> datetime:
    if isinstance(cutoff, str):
        try:
            cutoff = datetime.fromisoformat(cutoff)
        except ValueError as exc:
            raise ConfigError(
                f"cutoff {cutoff!r} is not an ISO-8601 time (e.g. 2026-01-26 or 2026-01-26T12:00:00+00:00)"
            ) from exc
    return cutoff.replace(tzinfo=UTC) if cutoff.tzinfo is None else cutoff.astimezone(UTC)


def _id_map(values: list[pl.Series], name: str) -> pl.DataFrame:
    """Sorted unique ids with their index; sorting makes indices deterministic for the same inputs."""
    present = [v for v in values if v is not None and v.len() > 0]
    if not present:
        return pl.DataFrame({name: pl.Series([], dtype=pl.String)}).with_row_index("index")
    dtypes = {v.dtype for v in present}
    if len(dtypes) > 1:
        present = [v.cast(pl.String) for v in present]  # e.g. Int64 catalog ids beside string event ids
    ids = pl.concat([v.alias(name) for v in present]).drop_nulls().unique().sort()
    return ids.to_frame().with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))


def _aggregate_edges(
    events: pl.LazyFrame,
    target: str,
    user_map: pl.DataFrame,
    target_map: pl.DataFrame,
    cutoff_us: int,
    decay: float,
) -> pl.DataFrame:
    """Group events on (behaviour, user, target): count, last time and decayed weight, sorted by that key.

    One lazy query from the scan to the aggregate, so only the needed columns are decoded; the three parts of
    the key are packed into one Int64 so grouping and sorting run on a single integer column.
    """
    column = NODE_ID_COLUMN[target]
    n_users, n_targets = max(1, user_map.height), max(1, target_map.height)
    ts = pl.col("timestamp").dt.epoch("us")
    key = (pl.col("behaviour") * n_users + pl.col("user_index")) * n_targets + pl.col("target_index")
    return (
        events.filter(pl.col(column).is_not_null())
        .select(
            "user_id",
            pl.col(column).cast(target_map[column].dtype),
            pl.col("event_type").cast(EVENT_TYPE_DTYPE).to_physical().cast(pl.Int64).alias("behaviour"),
            "timestamp",
        )
        .join(user_map.lazy().rename({"index": "user_index"}), on="user_id", how="inner")
        .join(target_map.lazy().rename({"index": "target_index"}), on=column, how="inner")
        .group_by(key.alias("key"))
        .agg(
            pl.len().alias("count"),
            (ts.max() // 1_000_000).alias("last_timestamp"),
            ((ts - cutoff_us).cast(pl.Float64) * decay).exp().sum().alias("weight"),
        )
        .sort("key")
        .with_columns(
            (pl.col("key") // (n_users * n_targets)).alias("behaviour"),
            (pl.col("key") // n_targets % n_users).alias("user_index"),
            (pl.col("key") % n_targets).alias("target_index"),
        )
        .collect()
    )


def _edge_index(src: np.ndarray, dst: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([src.astype(np.int64), dst.astype(np.int64)]))


def _tensor(series: pl.Series) -> torch.Tensor:
    return torch.from_numpy(series.to_numpy(writable=True))


def default_cutoff(events: pl.LazyFrame | pl.DataFrame) -> datetime:
    """One second after the last event: a snapshot before it holds every event (snapshots are strictly before)."""
    last = events.lazy().select(pl.col("timestamp").max()).collect().item()
    if last is None:
        raise InputError("events: no rows, so there is no cutoff to build a snapshot at")
    return last + timedelta(seconds=1)


def build_snapshot(
    events: pl.LazyFrame | pl.DataFrame,
    cutoff: datetime | str,
    items: pl.DataFrame | None = None,
    content: pl.DataFrame | None = None,
    config: GraphConfig | None = None,
    fingerprint: dict[str, Any] | None = None,
    text_encoder: dict[str, Any] | None = None,
    feedback: pl.LazyFrame | pl.DataFrame | None = None,
) -> Snapshot:
    """Build a snapshot from validated events (contract columns) strictly before `cutoff`, plus the catalog and
    the shoppers' module feedback (`feedback_edges`). `text_encoder` (name, version, dim) is recorded in the
    manifest when the catalog's text vectors came from one."""
    config = config or GraphConfig()
    cutoff = _to_utc(cutoff)
    cutoff_us = int(cutoff.timestamp() * 1_000_000)
    decay = math.log(2) / (config.half_life_days * 86_400 * 1_000_000)
    scan = events.lazy()
    schema = scan.collect_schema()
    for column in ("item_id", "content_id"):
        if column not in schema:
            scan = scan.with_columns(pl.lit(None, dtype=pl.String).alias(column))
    counted = scan.select((pl.col("timestamp") < cutoff).sum().alias("before"), pl.len().alias("total")).collect()
    before, total = int(counted["before"][0]), int(counted["total"][0])
    lazy = scan.filter(pl.col("timestamp") < cutoff)
    if content is not None and "launch" in content.columns:
        # A module launched at or after the cutoff did not exist then: no node, no featured-item edges.
        content = content.filter(pl.col("launch").is_null() | (pl.col("launch") < cutoff))

    def unique_ids(column: str) -> pl.Series:
        return lazy.select(pl.col(column).drop_nulls().unique()).collect()[column]

    maps: dict[str, pl.DataFrame] = {"user": _id_map([unique_ids("user_id")], "user_id")}
    item_sources = [unique_ids("item_id")]
    content_sources = [unique_ids("content_id")]
    if items is not None and config.catalog_nodes:
        item_sources.append(items["item_id"])
    if content is not None and config.catalog_nodes:
        content_sources.append(content["content_id"])
        if "item_ids" in content.columns:
            item_sources.append(content["item_ids"].explode().drop_nulls())
    maps["item"] = _id_map(item_sources, "item_id")
    maps["content"] = _id_map(content_sources, "content_id")

    edges: dict[EdgeType, dict[str, torch.Tensor]] = {}
    for target in ("item", "content"):
        aggregated = _aggregate_edges(lazy, target, maps["user"], maps[target], cutoff_us, decay)
        if aggregated.is_empty():
            continue
        for (code,), group in aggregated.partition_by("behaviour", as_dict=True, maintain_order=True).items():
            edges[("user", EVENT_TYPES[code], target)] = {
                "edge_index": _edge_index(group["user_index"].to_numpy(), group["target_index"].to_numpy()),
                "count": _tensor(group["count"].cast(pl.Int64)),
                "last_timestamp": _tensor(group["last_timestamp"]),
                "weight": _tensor(group["weight"].cast(pl.Float32)),
            }
        del aggregated

    feedback_counts = None
    if feedback is not None:
        feedback_edges, feedback_counts = _feedback_edges(feedback, maps["user"], maps["content"], cutoff, decay)
        edges.update(feedback_edges)

    node_features: dict[str, dict[str, torch.Tensor]] = {}
    node_tables: dict[str, pl.DataFrame] = dict(maps)
    if items is not None:
        node_tables["item"], item_edges, feature_maps = _item_catalog(maps["item"], items)
        maps.update(feature_maps)
        edges.update(item_edges)
        node_features["item"] = {
            name: _tensor(node_tables["item"][name])
            for name in ("category_index", "brand_index", "price")
            if name in node_tables["item"].columns
        }
        node_tables["item"], node_features["item"] = _vector_features(node_tables["item"], node_features["item"])
    if content is not None:
        node_tables["content"], content_edges, types = _content_catalog(maps["content"], maps["item"], content)
        edges.update(content_edges)
        node_features["content"] = {"module_type_index": _tensor(node_tables["content"]["module_type_index"])}
        node_tables["content"], node_features["content"] = _vector_features(
            node_tables["content"], node_features["content"]
        )
        node_tables["module_type"] = types
    for name in ("category", "brand"):
        if name in maps:
            node_tables[name] = maps[name]

    node_types = [t for t in ("user", "item", "content", "category", "brand") if t in maps]
    num_nodes = {t: maps[t].height for t in node_types}
    data = _assemble(num_nodes, edges, node_features)
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "kind": "graph_snapshot",
        "created_at": utc_now_iso(),
        "cutoff": cutoff.isoformat(),
        "events": {
            "input_rows": total,
            "used_before_cutoff": before,
            "excluded_at_or_after_cutoff": total - before,
        },
        "num_nodes": num_nodes,
        "num_edges": {"__".join(k): int(v["edge_index"].shape[1]) for k, v in edges.items()},
        "feedback": feedback_counts,
        "input_fingerprint": fingerprint or {},
        "content_vectors": {
            node: {name: int(value.shape[1]) for name, value in features.items() if value.dim() == 2}
            for node, features in node_features.items()
        },
        "text_encoder": text_encoder,
        "config": asdict(config),
        "code_version": code_version(),
        "stats": graph_statistics(data, num_nodes, edges, config.components),
    }
    return Snapshot(data, node_tables, manifest)


FEEDBACK_RELATIONS = {1: "more_like_this", -1: "hide"}  # the relation of each sign (hide_similar is a hide)


def _feedback_edges(
    feedback: pl.LazyFrame | pl.DataFrame,
    user_map: pl.DataFrame,
    content_map: pl.DataFrame,
    cutoff: datetime,
    decay: float,
) -> tuple[dict[EdgeType, dict[str, torch.Tensor]], dict[str, int]]:
    """Signed user -> module edges from the feedback table: `('user', 'more_like_this', 'content')` (+1) and
    `('user', 'hide', 'content')` (-1, hide and hide_similar), one per (user, module) from the user's latest action
    on it before the cutoff (as the ranking API honours the latest), with `count` (actions on the pair),
    `last_timestamp` and the decayed `weight` of that action. Actions of users or modules that are not nodes of this
    graph are counted in the returned accounting, not turned into nodes."""
    from graphrec.data.config import FEEDBACK_ACTIONS

    cutoff_us = int(cutoff.timestamp() * 1_000_000)
    frame = feedback.lazy().with_row_index("_order")
    total = frame.select(pl.len()).collect().item()
    before = frame.filter(pl.col("timestamp") < cutoff)
    pairs = (
        before.sort("timestamp", "_order")
        .group_by("user_id", "content_id")
        .agg(
            pl.len().alias("count"),
            pl.col("action").last().cast(pl.String).alias("action"),
            pl.col("timestamp").last().dt.epoch("us").alias("ts"),
        )
        .with_columns(pl.col("action").replace_strict(FEEDBACK_ACTIONS, return_dtype=pl.Int8).alias("sign"))
        .collect()
    )
    users = user_map.rename({"index": "user_index"})
    modules = content_map.rename({"index": "target_index"})
    pairs = pairs.with_columns(  # matched by value: an id of another type that matches no node is counted below
        pl.col("user_id").cast(pl.String).cast(users["user_id"].dtype, strict=False),
        pl.col("content_id").cast(pl.String).cast(modules["content_id"].dtype, strict=False),
    )
    joined = pairs.join(users, on="user_id", how="left").join(modules, on="content_id", how="left")
    known = joined.filter(pl.col("user_index").is_not_null() & pl.col("target_index").is_not_null())
    users_known = joined.filter(pl.col("user_index").is_not_null())
    counts = {
        "input_rows": int(total),
        "used_before_cutoff": int(before.select(pl.len()).collect().item()),
        "pairs": pairs.height,
        "pairs_user_not_in_graph": int(joined["user_index"].null_count()),
        "pairs_content_not_in_graph": int(users_known["target_index"].null_count()),
    }
    counts["excluded_at_or_after_cutoff"] = counts["input_rows"] - counts["used_before_cutoff"]
    edges: dict[EdgeType, dict[str, torch.Tensor]] = {}
    for sign, relation in FEEDBACK_RELATIONS.items():
        group = known.filter(pl.col("sign") == sign).sort("user_index", "target_index")
        counts[relation] = group.height
        if group.is_empty():
            continue
        edges[("user", relation, "content")] = {
            "edge_index": _edge_index(group["user_index"].to_numpy(), group["target_index"].to_numpy()),
            "count": _tensor(group["count"].cast(pl.Int64)),
            "last_timestamp": _tensor(group["ts"] // 1_000_000),
            "weight": _tensor(((group["ts"] - cutoff_us).cast(pl.Float64) * decay).exp().cast(pl.Float32)),
        }
    return edges, counts


def _item_catalog(item_map: pl.DataFrame, items: pl.DataFrame):
    """Attach catalog features to item nodes; build category / brand nodes and containment edges."""
    catalog = items.unique("item_id", keep="first", maintain_order=True)
    if catalog["item_id"].dtype != item_map["item_id"].dtype:
        catalog = catalog.with_columns(pl.col("item_id").cast(item_map["item_id"].dtype))
    table = item_map.join(catalog, on="item_id", how="left").sort("index")
    edges: dict[EdgeType, dict[str, torch.Tensor]] = {}
    feature_maps: dict[str, pl.DataFrame] = {}
    for column, node_type, relation in (
        ("category", "category", "in_category"),
        ("brand", "brand", "of_brand"),
    ):
        if column not in table.columns or table[column].null_count() == table.height:
            continue
        feature_map = _id_map([table[column]], column)
        feature_maps[node_type] = feature_map
        table = table.join(feature_map.rename({"index": f"{column}_index"}), on=column, how="left").sort("index")
        linked = table.filter(pl.col(f"{column}_index").is_not_null())
        edges[("item", relation, node_type)] = {
            "edge_index": _edge_index(linked["index"].to_numpy(), linked[f"{column}_index"].to_numpy())
        }
        table = table.with_columns(pl.col(f"{column}_index").fill_null(-1))
    if "price" in table.columns:
        table = table.with_columns(pl.col("price").cast(pl.Float32).fill_null(float("nan")))
    return table, edges, feature_maps


def _content_catalog(content_map: pl.DataFrame, item_map: pl.DataFrame, content: pl.DataFrame):
    """Attach module types to content nodes and build `('content', 'features', 'item')` edges."""
    catalog = content.unique("content_id", keep="first", maintain_order=True)
    if catalog["content_id"].dtype != content_map["content_id"].dtype:
        catalog = catalog.with_columns(pl.col("content_id").cast(content_map["content_id"].dtype))
    table = content_map.join(catalog, on="content_id", how="left").sort("index")
    types = _id_map([table["module_type"]], "module_type")
    table = table.join(types.rename({"index": "module_type_index"}), on="module_type", how="left").sort("index")
    table = table.with_columns(pl.col("module_type_index").fill_null(-1))
    edges: dict[EdgeType, dict[str, torch.Tensor]] = {}
    if "item_ids" in table.columns:
        pairs = table.select("index", pl.col("item_ids").alias("item_id")).explode("item_id").drop_nulls()
        if pairs["item_id"].dtype != item_map["item_id"].dtype:
            pairs = pairs.with_columns(pl.col("item_id").cast(item_map["item_id"].dtype))
        pairs = pairs.join(item_map.rename({"index": "item_index"}), on="item_id", how="inner")
        pairs = pairs.unique(["index", "item_index"]).sort("index", "item_index")
        edges[("content", "features", "item")] = {
            "edge_index": _edge_index(pairs["index"].to_numpy(), pairs["item_index"].to_numpy())
        }
        table = table.with_columns(pl.col("item_ids").list.len().fill_null(0).alias("num_items")).drop("item_ids")
    return table, edges, types


def _vector_features(table: pl.DataFrame, features: dict[str, torch.Tensor]):
    """Move the node table's content-vector columns (`*_embedding` arrays) into node features [num_nodes, size],
    zero rows for nodes without one (a column without any vector is dropped); the node table keeps ids and scalar
    columns only (no second copy)."""
    features = dict(features)
    for name in [n for n, dtype in table.schema.items() if n.endswith(VECTOR_SUFFIX) and isinstance(dtype, pl.Array)]:
        column = table[name]
        size = column.dtype.size
        values = np.zeros((table.height, size), dtype=np.float32)
        present = column.is_not_null().to_numpy()
        table = table.drop(name)
        if not present.any():
            continue
        values[present] = column.filter(column.is_not_null()).to_numpy().astype(np.float32)
        features[name] = torch.from_numpy(values)
    return table, features


def reverse_edge_type(edge_type: EdgeType) -> EdgeType:
    """Return the reverse edge type: `(src, rel, dst)` -> `(dst, 'rev_' + rel, src)`."""
    src, rel, dst = edge_type
    return (dst, f"rev_{rel}", src)


def _assemble(num_nodes: dict[str, int], edges: dict, node_features: dict) -> HeteroData:
    data = HeteroData()
    for node_type, count in num_nodes.items():
        data[node_type].num_nodes = count
        for name, tensor in node_features.get(node_type, {}).items():
            data[node_type][name] = tensor
    for edge_type, attrs in sorted(edges.items(), key=lambda kv: _edge_order(kv[0])):
        for name, tensor in attrs.items():
            data[edge_type][name] = tensor
        reverse = reverse_edge_type(edge_type)
        data[reverse].edge_index = attrs["edge_index"].flip(0)
        for name in EDGE_ATTRS:
            if name in attrs:
                data[reverse][name] = attrs[name]
    return data


def graph_statistics(data: HeteroData, num_nodes: dict[str, int], edges: dict, components: bool) -> dict[str, Any]:
    """Degrees per edge type, isolated nodes per node type and connected components of the whole graph."""
    stats: dict[str, Any] = {"degrees": {}, "isolated_nodes": {}}
    touched = {t: torch.zeros(n, dtype=torch.bool) for t, n in num_nodes.items()}
    for (src, rel, dst), attrs in edges.items():
        index = attrs["edge_index"]
        entry = {}
        for side, node_type, row in (("src", src, index[0]), ("dst", dst, index[1])):
            degree = torch.bincount(row, minlength=num_nodes[node_type]).double()
            touched[node_type][row] = True
            nonzero = degree[degree > 0]
            entry[side] = {
                "mean": round(float(nonzero.mean()), 3) if len(nonzero) else 0.0,
                "median": float(nonzero.median()) if len(nonzero) else 0.0,
                "p99": round(float(torch.quantile(nonzero[:16_000_000], 0.99)), 3) if len(nonzero) else 0.0,
                "max": float(degree.max()) if len(degree) else 0.0,
                "nodes_with_edges": len(nonzero),
            }
        stats["degrees"][f"{src}__{rel}__{dst}"] = entry
    stats["isolated_nodes"] = {t: int((~mask).sum()) for t, mask in touched.items()}
    if components:
        stats["components"] = _components(num_nodes, edges)
    return stats


def _components(num_nodes: dict[str, int], edges: dict) -> dict[str, Any]:
    # scipy's union-find over one homogeneous index space; networkx would take minutes at 10M edges.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    offsets, total = {}, 0
    for node_type, count in num_nodes.items():
        offsets[node_type] = total
        total += count
    if total == 0:
        return {"count": 0}
    rows = [attrs["edge_index"][0].numpy() + offsets[src] for (src, _, _), attrs in edges.items()]
    cols = [attrs["edge_index"][1].numpy() + offsets[dst] for (_, _, dst), attrs in edges.items()]
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    col = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    matrix = coo_matrix((np.ones(len(row), dtype=np.int8), (row, col)), shape=(total, total))
    count, labels = connected_components(matrix, directed=False)
    sizes = np.bincount(labels)
    return {
        "count": int(count),
        "count_excluding_isolated": int((sizes > 1).sum()),
        "largest_share": round(float(sizes.max() / total), 4),
    }


def save_snapshot(snapshot: Snapshot, out_dir: str | Path) -> Path:
    """Write the snapshot atomically: `graph.safetensors`, `nodes/<type>.parquet`, `manifest.json`.

    Only forward edges are stored; reverse edges are rebuilt on load. safetensors holds plain tensors and loads
    without executing code.
    """
    tensors: dict[str, torch.Tensor] = {}
    data = snapshot.data
    for edge_type in data.edge_types:
        if edge_type[1].startswith("rev_"):
            continue
        for name, value in data[edge_type].items():
            tensors[f"edge/{'__'.join(edge_type)}/{name}"] = value.contiguous()
    for node_type in data.node_types:
        for name, value in data[node_type].items():
            if isinstance(value, torch.Tensor):
                tensors[f"node/{node_type}/{name}"] = value.contiguous()
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as staging:
        save_file(tensors, staging / "graph.safetensors")
        (staging / "nodes").mkdir()
        for node_type, table in snapshot.node_ids.items():
            table.write_parquet(staging / "nodes" / f"{node_type}.parquet")
        write_json_atomic(staging / "manifest.json", snapshot.manifest)
    return out_dir


def load_snapshot(path: str | Path) -> Snapshot:
    """Load a snapshot written by `save_snapshot`, reverse edges included."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise InputError(f"{path}: not a graph snapshot (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != SNAPSHOT_FORMAT:
        raise InputError(f"{path}: snapshot format {manifest.get('format')} is not {SNAPSHOT_FORMAT}")
    tensors = load_file(path / "graph.safetensors")
    edges: dict[EdgeType, dict[str, torch.Tensor]] = {}
    node_features: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        kind, owner, name = key.split("/")
        if kind == "edge":
            edges.setdefault(tuple(owner.split("__")), {})[name] = value
        else:
            node_features.setdefault(owner, {})[name] = value
    node_ids = {p.stem: pl.read_parquet(p) for p in sorted((path / "nodes").glob("*.parquet"))}
    num_nodes = manifest["num_nodes"]
    return Snapshot(_assemble(num_nodes, edges, node_features), node_ids, manifest)


def _edge_order(edge_type: EdgeType) -> tuple:
    src, rel, dst = edge_type
    rank = EVENT_TYPES.index(rel) if rel in EVENT_TYPES else len(EVENT_TYPES)
    return (src != "user", dst, rank, rel)
