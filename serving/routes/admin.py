"""``POST /admin/reload`` (mounted only when ``FEEDREC_ADMIN_TOKEN`` is set; header ``X-Admin-Token``)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Header
from starlette.responses import Response

from recsys.bundle import BundleError
from serving.deps import StateDep
from serving.responses import OrjsonResponse, error_response
from serving.schemas import ReloadRequest

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post("/reload")
def reload_models(state: StateDep, x_admin_token: Annotated[str | None, Header()] = None,
                  body: ReloadRequest | None = None) -> Response:
    """Load the configured (or given) refs and swap atomically; a failing bundle is refused (409)."""
    token = state.settings.admin_token
    if token is None or x_admin_token is None or not secrets.compare_digest(
        x_admin_token.encode(), token.get_secret_value().encode()
    ):
        return error_response(401, "unauthorized", "missing or wrong X-Admin-Token")
    unknown = set(body.models if body else {}) - set(state.store.refs)
    if unknown:
        return error_response(422, "unknown_model", f"not configured: {sorted(unknown)}")
    try:
        fresh = state.store.reload(body.models if body else None)
    except (BundleError, FileNotFoundError, OSError, ValueError, RuntimeError) as exc:
        state.metrics.reloads.labels("refused").inc()
        return error_response(409, "reload_refused", f"{exc}; the previous models keep serving")
    state.metrics.reloads.labels("ok").inc()
    state.metrics.set_models(fresh)
    return OrjsonResponse({"status": "reloaded", "models": {n: m.version for n, m in fresh.items()}})
