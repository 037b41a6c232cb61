"""``/healthz`` (process up), ``/readyz`` (models loaded), ``/metrics`` (Prometheus), ``/models``."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from serving.deps import StateDep
from serving.responses import OrjsonResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: StateDep) -> Response:
    """200 when the default model is loaded, else 503; shows providers, cache, top-k backend and event sink."""
    store, service = state.store, state.service
    default = state.settings.default_model
    models = store.models
    ready = default is not None and default in models
    body = {
        "ready": ready,
        "default_model": default,
        "provider": models[default].provider if ready else None,
        "models": {n: {"version": m.version, "kind": m.kind, "provider": m.provider,
                       "topk": m.topk_mode} for n, m in models.items()},
        "errors": dict(store.errors),
        "cache": {"backend": service.cache.backend, "healthy": service.cache.healthy()},
        "topk_backend": service.topk.name,
        "int8_kernel": getattr(service.topk, "compact_kernel", None),
        "event_log": type(service.sink).__name__,
        "notes": state.notes,
    }
    return OrjsonResponse(body, status_code=200 if ready else 503)


@router.get("/metrics")
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/models")
def models(state: StateDep) -> Response:
    default = state.settings.default_model
    return OrjsonResponse({
        "default_model": default,
        "models": [{**m.describe(), "default": n == default} for n, m in state.store.models.items()],
    })
