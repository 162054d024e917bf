"""The preview page in a real browser: a `graphrec serve` process over a published pair, opened in headless
Chromium (Debian's `chromium`, which .ci/run installs); the page shows the ranked modules and the user's latest
events, loads nothing from outside the server, and its `hide` button removes the module on the reload."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from graphrec.data.validation import read_validated
from serving.preview import RECENT_EVENTS_SHOWN
from tests.support import serving_process


@pytest.fixture(scope="session")
def chromium_binary() -> str:
    """Debian's Chromium and Playwright, or a skip; session-scoped and asked for first, so that a missing browser
    skips before the published pair is built."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    return binary


@pytest.fixture
def browser(chromium_binary):
    """Headless Chromium through Playwright, for one test (Playwright's sync API keeps its own event loop, so it
    is not left open for the rest of the session)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_binary, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def server(published_pair, tmp_path):
    """`graphrec serve` on a loopback port over the published pair; yields its base URL once /readyz answers 200."""
    root, _ = published_pair
    options = [
        *("--serve.ranker", str(root / "ranker"), "--serve.store", str(root / "store"), "--serve.clock", "data_end"),
        *("--serve.feedback", str(tmp_path / "feedback"), "--serve.impression_log", str(tmp_path / "served")),
    ]
    with serving_process(options, tmp_path / "server.log") as url:
        yield url


def _heaviest_user(validated: Path) -> tuple[str, pl.DataFrame]:
    """The user with the most validated events, and those events newest first."""
    events = read_validated(validated)[0].collect()
    counts = events.group_by("user_id").len().sort(["len", "user_id"], descending=[True, False])
    user = counts["user_id"][0]
    return user, events.filter(pl.col("user_id") == user).sort("timestamp", descending=True)


def _content_ids(page) -> list[str]:
    return page.locator("li.module").evaluate_all("nodes => nodes.map(n => n.dataset.contentId)")


@pytest.mark.slow  # about 30 s beyond the pair: the server's start (torch, the feature index) and the browser's
def test_preview_ranks_the_homepage_and_hide_removes_the_module_on_reload(
    chromium_binary, browser, server, published_pair
):
    root, _ = published_pair
    user, events = _heaviest_user(root / "validated")
    assert events.height > RECENT_EVENTS_SHOWN
    context = browser.new_context()
    try:
        page = context.new_page()
        requested, dialogs, errors = [], [], []
        page.on("request", lambda request: requested.append(request.url))
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        response = page.goto(f"{server}/preview?user_id={user}", wait_until="load")
        assert response is not None and response.status == 200

        # Every module shows a type, a title, its rank and score (best first) and at least one reason.
        modules = page.locator("li.module")
        assert modules.count() >= 5
        ranks, scores = [], []
        for module in modules.all():
            assert module.locator(".type").inner_text().strip() not in ("", "unknown")
            title = module.locator("strong").inner_text().strip()
            assert title and title != module.get_attribute("data-content-id")  # the catalog's title, not the id
            assert module.locator(".reasons").inner_text().strip()
            shown = re.fullmatch(r"#(\d+) · (\d+\.\d{4})", module.locator(".score").inner_text().strip())
            assert shown, module.locator(".score").inner_text()
            ranks.append(int(shown[1]))
            scores.append(float(shown[2]))
            assert module.locator("button[data-action]").count() == 3
        assert ranks == list(range(1, len(ranks) + 1))
        assert scores == sorted(scores, reverse=True)

        # The user's latest events, newest first: the times of the newest validated ones, each with its event type.
        latest = page.locator("aside li").all_inner_texts()
        newest = events.head(RECENT_EVENTS_SHOWN)
        assert [line[: len("2026-01-31 23:59")] for line in latest] == [
            f"{t:%Y-%m-%d %H:%M}" for t in newest["timestamp"]
        ]
        assert {line.split(" ")[2] for line in latest} <= set(newest["event_type"].cast(pl.String))

        before = _content_ids(page)
        hidden = before[0]
        with page.expect_navigation(wait_until="load"):
            modules.first.locator("button[data-action='hide']").click()
        assert not dialogs, dialogs  # the page alerts when /v1/feedback refuses
        after = _content_ids(page)
        assert hidden not in after
        # The others keep their order (hide only removes; the scores do not change), one more fills the page.
        assert after[: len(before) - 1] == before[1:]
        assert len(after) == len(before)

        # One self-contained page: every request (page, feedback, reload) goes to the loopback server, and none
        # fails or throws (a missing favicon would show here as a console error).
        assert requested and all(url.startswith((f"{server}/", "data:")) for url in requested), requested
        assert f"{server}/v1/feedback" in requested
        assert not errors, errors
    finally:
        context.close()
