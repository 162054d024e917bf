"""Shoppers' module feedback from the ranking API into the next graph: the API's database read as the contract's
feedback table, validated with every row accounted for, and turned into signed user -> module edges (the latest
action per pair before the cutoff)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from graphrec.data.config import ValidationConfig
from graphrec.data.feedback import read_feedback_store
from graphrec.data.validation import read_feedback, read_validated, validate_dataset
from graphrec.errors import InputError
from graphrec.graph.snapshot import build_snapshot, load_snapshot, save_snapshot
from serving.feedback import FeedbackStore

T0 = datetime(2026, 1, 10, tzinfo=UTC)
CUTOFF = T0 + timedelta(days=2)


def _events() -> pl.DataFrame:
    rows = [(u, 100 + u, "view", T0 + timedelta(hours=u)) for u in range(1, 5)]
    rows += [(u, None, "click", T0 + timedelta(hours=u)) for u in range(1, 5)]
    frame = pl.DataFrame(rows, schema=["user_id", "item_id", "event_type", "timestamp"], orient="row")
    return frame.with_columns(content_id=pl.when(pl.col("item_id").is_null()).then(pl.col("user_id") + 500))


def _content() -> pl.DataFrame:
    return pl.DataFrame({"content_id": [501, 502, 503, 504, 505], "module_type": ["banner"] * 5})


def _record(store: FeedbackStore, user, module, action: str, hours: float) -> None:
    store.record(user, module, action, T0 + timedelta(hours=hours))


@pytest.fixture()
def api_feedback(tmp_path):
    """The ranking API's feedback database with a history a snapshot must read right."""
    store = FeedbackStore(tmp_path / "feedback")
    _record(store, 1, 502, "more_like_this", 10)
    _record(store, 1, 502, "hide", 20)  # the latest action on a pair wins: a hide
    _record(store, 2, 503, "hide_similar", 11)  # a hide
    _record(store, 3, 504, "more_like_this", 12)
    _record(store, 3, 505, "hide", 60)  # at or after the cutoff: not in the snapshot
    _record(store, 99, 501, "hide", 13)  # a user the graph does not hold
    _record(store, 4, 999, "more_like_this", 14)  # a module the graph does not hold
    store.close()
    return tmp_path / "feedback"


def test_the_api_database_reads_as_the_contract_table(api_feedback, tmp_path):
    table = read_feedback_store(api_feedback)
    assert table.columns == ["user_id", "content_id", "action", "timestamp"]
    assert table.height == 7 and table["action"].to_list()[:2] == ["more_like_this", "hide"]
    empty = tmp_path / "nothing-yet"
    empty.mkdir()
    assert read_feedback_store(empty).height == 0  # the API has not recorded anything yet: zero rows, no error
    with pytest.raises(InputError, match="not found"):
        read_feedback_store(tmp_path / "missing")


def test_feedback_is_validated_with_every_row_accounted_for(api_feedback, tmp_path):
    raw = read_feedback_store(api_feedback)
    odd = pl.DataFrame(
        {
            "user_id": ["1", "2", "3"],
            "content_id": ["501", "501", "501"],
            "action": ["More-Like-This", "dislike", None],
            "timestamp": [(T0 + timedelta(hours=h)).isoformat() for h in (1, 2, 3)],
        }
    )
    report = validate_dataset(
        {"events": _events(), "content": _content(), "feedback": pl.concat([raw, odd])},
        tmp_path / "validated",
        ValidationConfig(max_bad_fraction=0.5),
    )
    counted = report["tables"]["feedback"]
    assert counted["input_rows"] == 10
    assert counted["used"] + counted["deduplicated"] + counted["quarantined"] == 10
    assert counted["reasons"] == {"unknown_action": 1, "null_action": 1}
    feedback = read_feedback(tmp_path / "validated").collect()
    assert feedback["user_id"].dtype == pl.Int64  # the API writes ids as text; they take the events' type
    assert "more_like_this" in feedback.filter(pl.col("timestamp") == T0 + timedelta(hours=1))["action"].to_list()
    assert report["cross_checks"]["feedback_content_not_in_catalog"] == 1  # module 999


def test_the_snapshot_holds_the_latest_action_per_pair_as_signed_edges(api_feedback, tmp_path):
    validate_dataset(
        {"events": _events(), "content": _content(), "feedback": read_feedback_store(api_feedback)},
        tmp_path / "validated",
    )
    events, _, content, _ = read_validated(tmp_path / "validated")
    snapshot = build_snapshot(events, CUTOFF, content=content, feedback=read_feedback(tmp_path / "validated"))
    save_snapshot(snapshot, tmp_path / "snapshot")
    loaded = load_snapshot(tmp_path / "snapshot")

    def pairs(relation: str) -> set[tuple[int, int]]:
        if ("user", relation, "content") not in loaded.data.edge_types:
            return set()
        users, modules = loaded.data["user", relation, "content"].edge_index
        user_ids, module_ids = loaded.ids_of("user", users).to_list(), loaded.ids_of("content", modules).to_list()
        return set(zip(user_ids, module_ids, strict=True))

    assert pairs("more_like_this") == {(3, 504)}
    assert pairs("hide") == {(1, 502), (2, 503)}
    assert loaded.data["user", "hide", "content"].count.tolist() == [2, 1]  # two actions on (1, 502)
    assert ("content", "rev_hide", "user") in loaded.data.edge_types
    counts = loaded.manifest["feedback"]
    assert counts["input_rows"] == 7 and counts["used_before_cutoff"] == 6
    assert counts["excluded_at_or_after_cutoff"] == 1
    assert counts["pairs"] == 5  # (1, 502), (2, 503), (3, 504), (99, 501), (4, 999)
    assert counts["pairs_user_not_in_graph"] == 1 and counts["pairs_content_not_in_graph"] == 1
    assert counts["more_like_this"] + counts["hide"] + 2 == counts["pairs"]
    assert "user__hide__content" in loaded.manifest["num_edges"]


def test_the_scheduled_job_reads_the_api_feedback_into_the_next_graph(api_feedback, tmp_path):
    """`graphrec run --input.feedback <the API's serve.feedback>`: input, validation and snapshot stages."""
    import training.pipeline as pipeline
    from graphrec.data.config import InputConfig

    source = tmp_path / "input"
    source.mkdir()
    _content().write_parquet(source / "content.parquet")
    later = _events().with_columns(pl.col("timestamp") + timedelta(days=3))  # the snapshot's cutoff after them all
    pl.concat([_events(), later]).write_parquet(source / "events.parquet")
    settings = pipeline.RunSettings(
        workdir=tmp_path / "work",
        input=InputConfig(format="contract", path=str(source), feedback=str(api_feedback)),
    )

    def run_until_snapshot() -> pipeline._Run:
        run = pipeline._Run(settings, "2026-01-20", tmp_path / "work", None)
        run.input()
        run.validate()
        run.snapshot()
        return run

    first = run_until_snapshot()
    assert first.report["stages"]["input"]["feedback"]["rows"] == 7
    assert first.report["stages"]["validate"]["tables"]["feedback"]["used"] == 7
    snapshot = load_snapshot(tmp_path / "work" / "snapshot")
    assert snapshot.manifest["feedback"]["used_before_cutoff"] == 7  # every action is before this cutoff
    assert snapshot.manifest["num_edges"]["user__hide__content"] == 3  # (1, 502), (2, 503), (3, 505)

    again = run_until_snapshot()  # nothing new recorded: the stages are reused
    assert {"validate", "snapshot"} <= set(again.report["up_to_date"])

    store = FeedbackStore(api_feedback)
    _record(store, 4, 504, "hide", 30)  # the API goes on recording between runs
    store.close()
    third = run_until_snapshot()
    assert "validate" not in third.report["up_to_date"]
    assert load_snapshot(tmp_path / "work" / "snapshot").manifest["num_edges"]["user__hide__content"] == 4


def test_validate_and_build_graph_commands_take_the_api_feedback(api_feedback, tmp_path):
    from training.cli import main

    source = tmp_path / "input"
    source.mkdir()
    _events().write_parquet(source / "events.parquet")
    _content().write_parquet(source / "content.parquet")
    validated, graph = str(tmp_path / "validated"), str(tmp_path / "graph")
    command = ["validate", "--input.path", str(source), "--input.feedback", str(api_feedback), "--out", validated]
    assert main(command) == 0
    assert read_feedback(validated).collect().height == 7
    assert main(["build-graph", "--validated", validated, "--out", graph, "--cutoff", CUTOFF.isoformat()]) == 0
    assert load_snapshot(graph).manifest["num_edges"]["user__more_like_this__content"] == 1
    assert (
        main(["validate", "--input.path", str(source), "--input.feedback", str(tmp_path / "no"), "--out", validated])
        == 2
    )


def test_an_id_of_another_type_from_the_api_is_counted_not_fatal(tmp_path):
    """The API records whatever ids its callers send: a guest's text id beside a shop of integer ids matches no
    user and is counted, and the run goes on (it must not stop every nightly run)."""
    store = FeedbackStore(tmp_path / "feedback")
    _record(store, "guest-7f3", 502, "hide", 1)
    _record(store, 2, "not-a-module", "hide", 2)
    _record(store, 3, 504, "more_like_this", 3)
    store.close()
    report = validate_dataset(
        {"events": _events(), "content": _content(), "feedback": read_feedback_store(tmp_path / "feedback")},
        tmp_path / "validated",
    )
    assert report["tables"]["feedback"]["used"] == 3
    assert report["cross_checks"]["feedback_content_not_in_catalog"] == 1
    events, _, content, _ = read_validated(tmp_path / "validated")
    feedback = read_feedback(tmp_path / "validated")
    counts = build_snapshot(events, CUTOFF, content=content, feedback=feedback).manifest["feedback"]
    assert counts["pairs_user_not_in_graph"] == 1 and counts["pairs_content_not_in_graph"] == 1
    assert counts["more_like_this"] == 1
    from graphrec.rank.features import behaviour_features
    from graphrec.rank.online import FeatureState

    rows = pl.DataFrame({"user_id": [3, 3], "content_id": [504, 502], "timestamp": [CUTOFF, CUTOFF]})
    offline = behaviour_features(rows, events, None, content, None, feedback=feedback)
    assert offline["user_module_more_like_this"].to_list() == [1, 0]
    state = FeatureState(events.collect(), None, content, None, feedback=feedback.collect())
    online = state.features(3, [state.module_of(504), state.module_of(502)], int(CUTOFF.timestamp() * 1e6))
    assert online.dense[:, online.names.index("user_module_more_like_this")].tolist() == [1, 0]
