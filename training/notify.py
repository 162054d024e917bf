"""Telling a running ranking API to load the pair a run just published (`POST /admin/reload`)."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any

from training.config import ReloadConfig

log = logging.getLogger("graphrec.pipeline")


def tell_api_to_reload(config: ReloadConfig) -> dict[str, Any]:
    """POST `<url>/admin/reload` with the admin token from `config.token_env`; returns what happened. A failure is
    logged and reported, not raised: the pair is published either way, and the API loads it on its next start or
    reload."""
    url = config.url.rstrip("/") + "/admin/reload"
    token = os.environ.get(config.token_env)
    if not token:
        log.warning("reload: %s is not set, so %s was not told to reload", config.token_env, url)
        return {"url": url, "reloaded": False, "error": f"{config.token_env} is not set"}
    request = urllib.request.Request(url, method="POST", data=b"", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=config.timeout_s) as response:
            body = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        log.warning("reload: %s answered %d: %s", url, exc.code, detail)
        return {"url": url, "reloaded": False, "error": f"HTTP {exc.code}: {detail}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("reload: %s could not be reached (%s); it serves the new pair from its next start", url, exc)
        return {"url": url, "reloaded": False, "error": str(exc)}
    log.info("reload: %s now serves %s", url, body)
    return {"url": url, "reloaded": True, "answer": body}
