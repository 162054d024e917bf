"""Telling a running API to reload: the admin token sent, and every failure reported, not raised."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.support import free_loopback_port
from training.config import ReloadConfig
from training.notify import tell_api_to_reload


@pytest.fixture
def api():
    """A loopback HTTP server answering POST /admin/reload like the ranking API (200 with the token, 401 without)."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append((self.path, self.headers.get("Authorization")))
            ok = self.path == "/admin/reload" and self.headers.get("Authorization") == "Bearer s3cret"
            body = json.dumps({"models": {"default": "v000004"}} if ok else {"detail": "a valid bearer token"})
            self.send_response(200 if ok else 401)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", free_loopback_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def test_reload_sends_the_token(api, monkeypatch):
    url, seen = api
    monkeypatch.setenv("GRAPHREC_ADMIN_TOKEN", "s3cret")
    result = tell_api_to_reload(ReloadConfig(url=url + "/"))
    assert result["reloaded"] and result["answer"] == {"models": {"default": "v000004"}}
    assert seen == [("/admin/reload", "Bearer s3cret")]


def test_reload_failures_are_reported(api, monkeypatch):
    url, _ = api
    monkeypatch.setenv("GRAPHREC_ADMIN_TOKEN", "wrong")
    refused = tell_api_to_reload(ReloadConfig(url=url))
    assert not refused["reloaded"] and refused["error"].startswith("HTTP 401")
    monkeypatch.delenv("GRAPHREC_ADMIN_TOKEN")
    assert "is not set" in tell_api_to_reload(ReloadConfig(url=url))["error"]
    monkeypatch.setenv("GRAPHREC_ADMIN_TOKEN", "s3cret")
    down = tell_api_to_reload(ReloadConfig(url=f"http://127.0.0.1:{free_loopback_port()}", timeout_s=2))
    assert not down["reloaded"] and down["error"]
