"""A screenshot of the ranking API's preview page for the README.

Starts `graphrec serve` on a published (embedding version, ranker) pair: the one at `--ranker` / `--store`, or
one built in `--workdir` from the small generated shop of the tests (about a minute, reused on the next run),
opens /preview for the user with the most validated events in headless Chromium (Debian's `chromium`) at
1280x1600 and saves the full page.

Run: python benchmarks/preview_screenshot.py [--ranker DIR --store DIR] [--workdir artifacts/preview-shot]
Writes benchmarks/results/preview.png.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import REPO

RESULTS = Path(__file__).resolve().parent / "results"
VIEWPORT = {"width": 1280, "height": 1600}


def build_pair(workdir: Path) -> Path:
    """A published pair of the tests' small shop in `workdir` (built once; an existing one is reused)."""
    if (workdir / "ranker").exists() and (workdir / "store").exists():
        return workdir
    from graphrec.data.shop import generate_shop
    from tests.conftest import SMALL_SHOP
    from tests.support import publish_pair

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    print(f"building a published pair of the small shop in {workdir} ...", flush=True)
    publish_pair(generate_shop(SMALL_SHOP), workdir)
    return workdir


def heaviest_user(ranker: Path):
    """The user with the most events in the validated tables the ranker was trained on (those the server indexes)."""
    from graphrec.data.validation import read_validated
    from graphrec.rank.artifact import read_ranker_info

    events, *_ = read_validated(read_ranker_info(ranker)["data"]["validated"])
    counts = events.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False]).head(1).collect()
    return counts["user_id"][0]


@contextlib.contextmanager
def serving(ranker: Path, store: Path, workdir: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """`graphrec serve` on a loopback port until the block ends; yields its base URL once /readyz answers 200."""
    from tests.support import serving_process

    workdir.mkdir(parents=True, exist_ok=True)
    options = [
        *("--serve.ranker", str(ranker), "--serve.store", str(store), "--serve.clock", "data_end"),
        *("--serve.feedback", str(workdir / "feedback"), "--serve.impression_log", str(workdir / "served")),
    ]
    with serving_process(options, workdir / "server.log", timeout_s) as url:
        yield url


def screenshot(url: str, out: Path) -> None:
    """Save the full page at `url` as a PNG, through Debian's Chromium in headless mode."""
    from playwright.sync_api import sync_playwright

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url, wait_until="load")
            page.wait_for_selector("li.module")
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranker", type=Path, help="ranker artifact directory of an existing pair")
    parser.add_argument("--store", type=Path, help="embedding store of that pair")
    parser.add_argument("--workdir", type=Path, default=REPO / "artifacts" / "preview-shot")
    parser.add_argument("--user", help="user id to preview (default: the one with the most events)")
    parser.add_argument("--out", type=Path, default=RESULTS / "preview.png")
    args = parser.parse_args()
    if (args.ranker is None) != (args.store is None):
        parser.error("--ranker and --store go together")
    if args.ranker is None:
        root = build_pair(args.workdir)
        args.ranker, args.store = root / "ranker", root / "store"
    user = args.user or heaviest_user(args.ranker)
    with (
        tempfile.TemporaryDirectory(prefix="preview-shot-") as scratch,
        serving(args.ranker, args.store, Path(scratch)) as url,
    ):
        screenshot(f"{url}/preview?user_id={user}", args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) for user {user}")


if __name__ == "__main__":
    main()
