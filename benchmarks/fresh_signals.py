"""Do fresh session views move the page? For heavy users, modules from the lower half of their page are picked;
three views of each module's featured items are sent as `recent_events`, and the module's place before and after
is compared, with the fresh embedding on (features + the GNN's inductive re-embedding) and off (features only).

    python benchmarks/fresh_signals.py --store artifacts/store   # the live pair `make run` published
    python benchmarks/fresh_signals.py --ranker artifacts/ranker --store artifacts/store   # a ranker directory

Writes benchmarks/results/fresh_signals.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

# The repository first: this folder's serving.py (the latency benchmark) would shadow the serving package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphrec.rank.online import RecentEvents
from serving.config import ServeConfig
from serving.service import RankingService

RESULTS = Path(__file__).resolve().parent / "results"
US = 1_000_000


def trials(ranker: str, store: str, users: int, per_user: int, fresh: bool) -> tuple[list[dict], str, bool]:
    config = ServeConfig(
        ranker=ranker, store=store, clock="data_end", feedback=None, impression_log=None, fresh_embeddings=fresh
    )
    service = RankingService(config)
    generation, state = service.generation, service.generation.state
    t = state.data_end_us + 3600 * US
    when = datetime.fromtimestamp(t / US, tz=UTC)
    counts = state.event_segments.end - state.event_segments.start
    heavy = [u for u in np.argsort(-counts, kind="stable") if list(state.user_index)[u] in generation.users][:users]
    ids, user_ids = list(state.item_index), list(state.user_index)
    out = []
    for u in heavy:
        user = user_ids[u]
        page = service.rank(user, slots=10_000, timestamp=when, device="mobile_web", session_id="s-fresh")
        order = [m["content_id"] for m in page.modules]
        picked = [c for c in order[len(order) // 2 :] if len(state.featured_items[state.module_of(c)]) >= 3]
        for content_id in picked[:per_user]:
            items = state.featured_items[state.module_of(content_id)][:3]
            recent = RecentEvents(
                [ids[i] for i in items], [None] * 3, ["view"] * 3, [t - 300 * US + k for k in range(3)]
            )
            after = service.rank(
                user, slots=10_000, timestamp=when, device="mobile_web", session_id="s-fresh", recent=recent
            )
            moved = [m["content_id"] for m in after.modules]
            out.append(
                {
                    "user": user,
                    "module": content_id,
                    "before": order.index(content_id) + 1,
                    "after": moved.index(content_id) + 1,
                    "modules": len(order),
                }
            )
    return out, generation.embedding_version, generation.inductive is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranker", default=None, help="a ranker directory (default: the ranker paired with LATEST)")
    parser.add_argument("--store", default="artifacts/store")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--per-user", type=int, default=3)
    args = parser.parse_args()
    if args.ranker is None:
        from graphrec.store.pairs import require_paired_ranker

        args.ranker = str(require_paired_ranker(args.store)[1])
    summary = {}
    for fresh in (True, False):
        rows, version, has_state = trials(args.ranker, args.store, args.users, args.per_user, fresh)
        gains = np.array([r["before"] - r["after"] for r in rows])
        summary["features + fresh embedding" if fresh else "features only"] = {
            "trials": len(rows),
            "lifted": int((gains > 0).sum()),
            "share_lifted": round(float((gains > 0).mean()), 3),
            "mean_places_gained": round(float(gains.mean()), 1),
            "median_places_gained": float(np.median(gains)),
            "modules_on_page": rows[0]["modules"] if rows else 0,
            "inductive_state": has_state and fresh,
            "rows": rows,
        }
    repo = Path(__file__).resolve().parents[1]
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, cwd=repo
    ).stdout.strip()
    meta = {
        "command": "python benchmarks/fresh_signals.py " + f"--ranker {args.ranker} --store {args.store}",
        "ranker": args.ranker,
        "store": args.store,
        "embedding_version": version,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "machine": f"{platform.machine()}, python {platform.python_version()}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fresh_signals.json").write_text(json.dumps({"meta": meta, "results": summary}, indent=2))
    lines = [
        "# Fresh session views and the page",
        "",
        f"Command: `{meta['command']}`  ",
        f"Pair: {args.ranker} with embedding version {version} of {args.store}; commit {commit}; {meta['date']}",
        "",
        f"For the {args.users} heaviest users with an embedding, up to {args.per_user} modules each from the lower "
        "half of their page (every live module, ranked at the log's last moment + 1 h); three views of each "
        "module's first three featured items are sent as the session's `recent_events`; the module's place "
        "before and after.",
        "",
        "| path | trials | lifted | share lifted | mean places gained | median | modules on the page |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['trials']} | {s['lifted']} | {s['share_lifted']:.0%} | {s['mean_places_gained']:+.1f} | "
            f"{s['median_places_gained']:+.0f} | {s['modules_on_page']} |"
        )
    (RESULTS / "fresh_signals.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
