"""``/healthz`` (process up), ``/readyz`` (can serve), ``/metrics`` (Prometheus text), ``/models``.

``/readyz`` is 503 unless every model a request can be routed to is loaded: the default model and
every arm's model of the experiments running now (``ArmRouter.routed_models``). Shared dependencies
(the Redis feature cache, the event log) are reported in the body (``degraded`` lists the unhealthy
ones) but do not flip readiness: requests are still answered without them (the cache is skipped, lists
are served ``logged: false``), and a readiness that failed on a dependency every replica shares would
take every replica out of the load balancer at once, turning a logging outage into a serving outage.
"""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.deps import StateDep
from serving.responses import OrjsonResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A model that requests are routed to is not loaded"}})
async def readyz(state: StateDep) -> Response:
    """200 when every routed model is loaded, else 503; shows models, providers, cache, top-k backend and
    the event log (with their health)."""
    store, service = state.store, state.service
    default = state.settings.default_model
    models = store.models
    routed = service.router.routed_models() if default is not None else set()
    missing = sorted(name for name in routed if name not in models)
    ready = default is not None and not missing
    # Redis PINGs (cache, event log) may block up to their socket timeouts: off the event loop
    cache_ok, log_ok = await run_in_threadpool(lambda: (service.cache.healthy(), service.sink.healthy()))
    body = {
        "ready": ready,
        "missing_models": missing,
        "degraded": [name for name, ok in (("cache", cache_ok), ("event_log", log_ok)) if not ok],
        "default_model": default,
        "provider": models[default].provider if default in models else None,
        "models": {n: {"version": m.version, "kind": m.kind, "provider": m.provider,
                       "topk": m.topk_mode} for n, m in models.items()},
        "errors": dict(store.errors),
        "cache": {"backend": service.cache.backend, "healthy": cache_ok},
        "topk_backend": service.topk.name,
        "int8_kernel": getattr(service.topk, "compact_kernel", None),
        "event_log": {"backend": type(service.sink).__name__, "healthy": log_ok},
        "notes": state.notes,
    }
    return OrjsonResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition"}})  # fmt: skip
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/models")
def models(state: StateDep) -> Response:
    default = state.settings.default_model
    return OrjsonResponse({
        "default_model": default,
        "models": [{**m.describe(), "default": n == default} for n, m in state.store.models.items()],
    })
