"""The ranking API (FastAPI): POST /v1/rank orders the homepage's modules for a user, POST /v1/feedback records a
shopper's hide / more-like-this, /healthz, /readyz, /metrics, POST /admin/reload and GET /preview.

`create_app(config)` builds the app; the ranker, the feature index and the store clients load in `lifespan`, not
at import. `graphrec serve` runs it under uvicorn (`app_from_environment` is the workers' factory).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import timedelta

import anyio
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from graphrec.rank.online import RecentEvents
from serving.config import ServeConfig
from serving.metrics import ServingMetrics
from serving.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    RankRequest,
    RankResponse,
    ReloadResponse,
)

log = logging.getLogger("graphrec.serving")
access = logging.getLogger("graphrec.serving.access")

CONFIG_ENV = "GRAPHREC_SERVE_CONFIG"
TOKEN_ENV = "GRAPHREC_ADMIN_TOKEN"
RELOAD_ENV = "GRAPHREC_RELOAD_SIGNAL"  # the file that carries a reload to every worker (set by graphrec serve)
US = 1_000_000


def create_app(config: ServeConfig | None = None) -> FastAPI:
    """The ranking API over `config`'s ranker, validated tables and embedding store."""
    config = config or ServeConfig()
    metrics = ServingMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if getattr(app.state, "service", None) is not None:  # already running (a test client inside another)
            yield
            return
        from serving.feedback import FeedbackStore
        from serving.impressions import ImpressionLog
        from serving.service import RankingService

        feedback = FeedbackStore(config.feedback) if config.feedback else None
        service = await anyio.to_thread.run_sync(lambda: RankingService(config, feedback, None, metrics))
        state = service.generation.state
        impressions = None
        if config.impression_log:
            ids = {"user_id": state.user_dtype, "content_id": state.content_dtype}
            impressions = ImpressionLog(config.impression_log, config.log_flush_rows, config.log_flush_seconds, ids)
        service.impressions = impressions
        metrics.serving(service.generation)
        signal = None
        if os.environ.get(RELOAD_ENV):  # several workers: a reload reaches them all
            from serving.service import ReloadSignal

            signal = ReloadSignal(os.environ[RELOAD_ENV], service, metrics)
        app.state.reload_signal = signal
        app.state.service = service
        try:
            yield
        finally:
            app.state.service = None
            if signal is not None:
                signal.close()
            if impressions is not None:
                impressions.close()
            if feedback is not None:
                feedback.close()

    app = FastAPI(
        title="graphrec ranking API",
        version="1",
        description="Orders homepage content modules for a user with the published ranker and GNN embeddings.",
        lifespan=lifespan,
    )
    app.state.config = config
    app.state.metrics = metrics
    app.state.reload_signal = None

    def limit(name: str, count: int, most: int) -> None:
        if count > most:
            raise HTTPException(422, f"{name}: {count:,} given, at most {most:,} per request (serve.limits)")

    @app.post("/v1/rank", response_model=RankResponse)
    async def rank(body: RankRequest) -> RankResponse:
        started = time.perf_counter()
        limits = config.limits
        limit("candidates", len(body.candidates or []), limits.max_candidates)
        limit("recent_events", len(body.recent_events), limits.max_recent_events)
        limit("exclude", len(body.exclude), limits.max_exclude)
        limit("slots", body.slots or 0, limits.max_slots)
        context = body.context
        service = app.state.service
        when = context.timestamp if context and context.timestamp else service.now()
        recent = None
        if body.recent_events:
            just_before = when - timedelta(microseconds=1)
            recent = RecentEvents(
                item_ids=[e.item_id for e in body.recent_events],
                content_ids=[e.content_id for e in body.recent_events],
                event_types=[e.event_type for e in body.recent_events],
                timestamps=[int((e.timestamp or just_before).timestamp() * US) for e in body.recent_events],
            )
        page = service.rank(
            body.user_id,
            candidates=body.candidates,
            slots=body.slots,
            device=context.device if context else None,
            timestamp=when,
            session_id=context.session_id if context else None,
            recent=recent,
            exclude=body.exclude,
            diversity=body.diversity.model_dump(exclude_none=True) if body.diversity else None,
            reasons=body.reasons,
        )
        seconds = time.perf_counter() - started
        metrics.latency.labels("rank").observe(seconds)
        metrics.requests.labels("rank", "200").inc()
        access.info(
            "rank",
            extra={
                "request_id": page.request_id,
                "user_id": page.user_id,
                "arm": page.arm,
                "fallback": page.fallback,
                "modules": len(page.modules),
                "ms": round(seconds * 1e3, 3),
            },
        )
        return RankResponse.of(page)

    @app.post("/v1/feedback", response_model=FeedbackResponse)
    async def feedback(body: FeedbackRequest) -> FeedbackResponse:
        service = app.state.service
        if service.feedback is None:
            raise HTTPException(409, "feedback is off on this server (serve.feedback is null)")
        await anyio.to_thread.run_sync(
            lambda: service.feedback.record(body.user_id, body.content_id, body.action, body.timestamp)
        )
        metrics.feedback.labels(body.action).inc()
        metrics.requests.labels("feedback", "200").inc()
        return FeedbackResponse(recorded=True, user_id=body.user_id, content_id=body.content_id, action=body.action)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        service = getattr(request.app.state, "service", None)
        if service is None:
            return JSONResponse({"ready": False}, status_code=503)
        generation = service.generation
        return JSONResponse(
            {
                "ready": True,
                "worker": os.getpid(),  # which worker process answered (several share the port)
                "arms": {a.name: a.model_version for a in generation.arms.values()},
                "embedding_version": generation.embedding_version,
                "loaded_at": generation.loaded_at.isoformat(),
                "online_store": "down" if service.reader.down or generation.online is None else "up",
            }
        )

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.post("/admin/reload", response_model=ReloadResponse)
    async def reload(authorization: str | None = Header(None)) -> ReloadResponse:
        token = config.admin_token or os.environ.get(TOKEN_ENV)
        if not token:
            raise HTTPException(403, f"reload is disabled: set serve.admin_token or {TOKEN_ENV}")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        service = app.state.service
        started = time.perf_counter()
        try:
            generation = await anyio.to_thread.run_sync(service.reload)
        except Exception as exc:
            metrics.reloads.labels("refused").inc()
            log.warning("reload refused, the serving pair stays: %s", exc)
            raise HTTPException(409, f"reload refused, still serving the previous pair: {exc}") from None
        metrics.reloads.labels("ok").inc()
        metrics.serving(generation)
        if app.state.reload_signal is not None:
            app.state.reload_signal.announce()
        return ReloadResponse(
            reloaded=True,
            arms={a.name: a.model_version for a in generation.arms.values()},
            embedding_version=generation.embedding_version,
            seconds=round(time.perf_counter() - started, 3),
        )

    @app.get("/preview", response_class=HTMLResponse)
    async def preview(
        user_id: str = Query(..., min_length=1, max_length=256), slots: int = Query(20, ge=1, le=200)
    ) -> HTMLResponse:
        from serving.preview import render_preview

        service = app.state.service
        return HTMLResponse(render_preview(service, user_id, slots))

    return app


def app_from_environment() -> FastAPI:
    """The app of a uvicorn worker: the ServeConfig `graphrec serve` put in GRAPHREC_SERVE_CONFIG as JSON."""
    from jsonargparse import ArgumentParser

    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        return create_app(ServeConfig())
    parser = ArgumentParser()
    parser.add_class_arguments(ServeConfig, "serve")
    namespace = parser.parse_object({"serve": json.loads(raw)})
    config = parser.instantiate_classes(namespace).serve
    return create_app(config)


def config_to_environment(config: ServeConfig) -> str:
    """The JSON `app_from_environment` reads back."""
    return json.dumps(asdict(config))
