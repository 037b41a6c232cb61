"""``POST /admin/reload`` (mounted only when ``FEEDREC_ADMIN_TOKEN`` is set; header ``X-Admin-Token``).

The token is checked before the body is read: the endpoint takes the raw request and parses the body
itself, because FastAPI reads and validates a declared body before any dependency runs (a malformed
body with a wrong token got 422 instead of 401). The body's schema is still in the OpenAPI document.

Answers: 200 reloaded; 401 missing or wrong token; 422 malformed (or undecodable) body or unknown
model name; 403 a reference outside ``FEEDREC_BUNDLE_ROOTS`` (and not a registry reference); 409 a model
was refused (checksums, malformed manifest, parity...): the previous models keep serving. Every
refusal is counted in ``feedrec_model_reloads_total{result="refused"}``.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from recsys.bundle import BundleError
from serving.api_models import ErrorBody, ReloadRequest, ReloadResponse
from serving.deps import StateDep
from serving.refs import RefNotAllowed, check_reload_ref
from serving.responses import OrjsonResponse, error_response, validation_detail

router = APIRouter(prefix="/admin", tags=["admin"])

_BODY_SCHEMA = {
    "required": False,
    "content": {"application/json": {"schema": ReloadRequest.model_json_schema(ref_template="#/components/schemas/{model}")}},
}


@router.post("/reload", response_model=ReloadResponse, openapi_extra={"requestBody": _BODY_SCHEMA},
             responses={401: {"model": ErrorBody, "description": "Missing or wrong X-Admin-Token"},
                        403: {"model": ErrorBody, "description": "A ref outside the bundle roots"},
                        409: {"model": ErrorBody, "description": "A model was refused; the old ones keep serving"},
                        413: {"model": ErrorBody, "description": "Body larger than FEEDREC_MAX_BODY_BYTES"},
                        422: {"model": ErrorBody, "description": "Malformed body, or a model name not configured"}})  # fmt: skip
async def reload_models(request: Request, state: StateDep) -> Response:
    """Load the configured (or given) refs and swap atomically; a failing bundle is refused (409)."""
    token = state.settings.admin_token
    given = request.headers.get("x-admin-token")
    if token is None or given is None or not secrets.compare_digest(
        given.encode(), token.get_secret_value().encode()
    ):
        return error_response(401, "unauthorized", "missing or wrong X-Admin-Token")
    raw = await request.body()
    try:
        body = ReloadRequest.model_validate_json(raw) if raw.strip() else ReloadRequest()
    except ValidationError as exc:
        return error_response(422, "invalid_request", validation_detail(exc.errors()))
    unknown = set(body.models) - set(state.store.refs)
    if unknown:
        return error_response(422, "unknown_model", f"not configured: {sorted(unknown)}")
    try:
        for ref in body.models.values():
            check_reload_ref(ref, state.settings.bundle_roots)
    except RefNotAllowed as exc:
        state.metrics.reloads.labels("refused").inc()
        return error_response(403, "ref_not_allowed", str(exc))
    try:
        # loading runs ONNX Runtime and a parity check for seconds: off the event loop
        fresh = await run_in_threadpool(state.store.reload, body.models or None)
    except BundleError as exc:
        state.metrics.reloads.labels("refused").inc()
        return error_response(409, "reload_refused", f"{exc}; the previous models keep serving")
    state.metrics.reloads.labels("ok").inc()
    state.metrics.set_models(fresh)
    return OrjsonResponse({"status": "reloaded", "models": {n: m.version for n, m in fresh.items()}})
