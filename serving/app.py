"""The FastAPI application: ``create_app(settings)`` wires settings, models, cache, router and routes.

Run it with ``python -m serving`` (uvicorn; see ``serving/__main__.py``) or
``uvicorn serving.app:create_app --factory``. Endpoints::

    GET  /recommend/{user_id}?k=20   top-k items (fallback null | "cold_start" | "popular")
    POST /feedback                   outcome of a shown item; updates the user's recent interactions
    GET  /experiments/{key}/report   A/B report (html | md | json) from the event log
    GET  /healthz /readyz /metrics /models
    POST /admin/reload               only when FEEDREC_ADMIN_TOKEN is set

Errors always have the shape ``{"error": code, "detail": ...}``; malformed input gets 422, a body over
``FEEDREC_MAX_BODY_BYTES`` 413 before it is read (``serving.limits``), and no client input produces a
traceback (exception handlers below).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api_models import exact_int64_bounds
from serving.arm_router import build_arm_router
from serving.backends import resolve_providers
from serving.cache import build_cache
from serving.deps import ServingState
from serving.drift_watch import start_drift_watch
from serving.features import FeatureSource
from serving.limits import BodyLimitMiddleware
from serving.loading import ModelStore
from serving.pipeline import RecommendService
from serving.responses import error_response, validation_detail
from serving.routes import admin, experiments, feedback, health, recommend
from serving.service_metrics import ServingMetrics
from serving.settings import ServingSettings, get_settings
from serving.sinks import EventSink, open_sink

log = logging.getLogger("serving")

_ROUTE_LABELS = {"/feedback", "/healthz", "/readyz", "/metrics", "/models", "/admin/reload"}


def route_label(path: str) -> str:
    """Low-cardinality route label (never the user id)."""
    if path.startswith("/recommend/"):
        return "/recommend/{user_id}"
    if path.startswith("/experiments/"):
        return "/experiments/{key}/report"
    return path if path in _ROUTE_LABELS else "other"


class MetricsMiddleware:
    """Pure-ASGI latency/error accounting (cheaper than ``BaseHTTPMiddleware``)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_label(scope["path"])
            arm = scope.get("state", {}).get("arm", "none")
            self.metrics.latency.labels(route, arm).observe(time.perf_counter() - start)
            if status >= 400:
                self.metrics.request_errors.labels(route, str(status), arm).inc()


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(422, "invalid_request", validation_detail(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s", route_label(request.url.path))
        return error_response(500, "internal_error", "the error was logged")


def build_state(settings: ServingSettings, metrics: ServingMetrics, sink: EventSink | None = None) -> ServingState:
    """Load models and build the service (blocking; called from the lifespan).

    Without ``sink`` the event sink of the settings is opened (:func:`serving.sinks.open_sink`) and
    closed at shutdown; a given ``sink`` belongs to the caller.
    """
    notes: list[str] = []
    import torch

    torch.set_num_threads(settings.torch_threads)
    if settings.encoder == "onnx":
        providers, notes = resolve_providers(settings.providers, settings.trt_cache_dir, settings.trt_fp16)
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        log.info("ONNX Runtime: %s", "; ".join([*notes, f"first provider: {first}"]))
    store = ModelStore(settings)
    store.load_initial()
    metrics.set_models(store.models)
    cache = build_cache(
        settings.redis_url, lru_size=settings.lru_size, features_ttl_s=settings.features_ttl_s,
        vector_ttl_s=settings.vector_ttl_s, max_recent=settings.max_recent, timeout_s=settings.redis_timeout_s,
        breaker_reset_s=settings.breaker_reset_s,
        on_error=lambda op: metrics.cache_errors.labels(op).inc(),
        on_skip=lambda op: metrics.cache_skips.labels(op).inc(),
    )
    router = build_arm_router(settings.default_model or "", settings.experiments_dir, settings.models)
    owns_sink = sink is None
    if sink is None:
        sink = open_sink(settings)
        log.info("event log: %s", _describe_sink(sink, settings))
    if hasattr(sink, "counters"):
        metrics.watch_event_log(sink.counters)
    service = RecommendService(
        store, cache, FeatureSource(settings.data_dir, settings.max_recent), router,
        sink, metrics, vector_cache=settings.vector_cache, result_cache=settings.result_cache,
    )
    for name, model in store.models.items():
        log.info("serving %s (%s) with ONNX Runtime provider %s", name, model.version, model.provider)
    log.info("feature cache: %s; top-k backend: %s", cache.backend, service.topk.name)
    return ServingState(settings=settings, service=service, store=store, metrics=metrics, notes=notes, sink=sink,
                        owns_sink=owns_sink)


def _describe_sink(sink: EventSink, settings: ServingSettings) -> str:
    if settings.events_dir is None:
        return "in memory (not durable; FEEDREC_EVENTS_DIR=memory)"
    return f"{type(sink).__name__} in {settings.events_dir}" + (" (sim time allowed)" if settings.allow_sim_time else "")


def create_app(settings: ServingSettings | None = None, sink: EventSink | None = None) -> FastAPI:
    """The application; ``settings`` default to the environment (``get_settings()``)."""
    settings = settings or get_settings()
    metrics = ServingMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = build_state(settings, metrics, sink)
        app.state.serving = state
        drift = start_drift_watch(settings, state.sink, metrics.registry)  # off without a reference
        try:
            yield
        finally:
            if drift is not None:
                drift.cancel()
            state.service.cache.close()
            if state.owns_sink and hasattr(state.sink, "close"):
                state.sink.close()

    app = FastAPI(title="feedrec", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    generate_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = exact_int64_bounds(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    if settings.route_mode == "async":  # matched first; the APIRoute below documents the same endpoint
        app.add_route("/recommend/{user_id}", recommend.recommend_fast, methods=["GET"], include_in_schema=False)
    app.include_router(recommend.build_router(settings.route_mode))
    app.include_router(feedback.router)
    app.include_router(experiments.router)
    app.include_router(health.router)
    if settings.admin_token is not None:
        app.include_router(admin.router)
    # inside MetricsMiddleware (added after it, so outside of it), before any route: an oversized body is
    # refused unread and still shows in feedrec_request_errors_total{status="413"}
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       on_refuse=metrics.requests_refused.labels("body_too_large").inc)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
