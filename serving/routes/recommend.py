"""``GET /recommend/{user_id}?k=20``.

The list is answered only after its exposure went to the event sink: stored (``logged: true``), or the
sink failed (``logged: false``, counted; the user still gets the list). A sink whose appends block
(fsync, Redis) is called in Starlette's thread pool from the async route, so concurrent requests share
the log's group commits instead of queueing behind one fsync on the event loop; the in-memory sink is
called inline.

``k`` follows one rule on both routes (:func:`serving.api_models.parse_k`: ASCII digits, 1..100).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from serving.api_models import ID_PATTERN, K_DEFAULT, K_MAX, K_MIN, ErrorBody, RecommendResponse, parse_k
from serving.deps import EventTimeDep, ServiceDep, get_event_time
from serving.pipeline import ModelUnavailable, Recommendation, RecommendService
from serving.responses import OrjsonResponse, error_response, validation_detail

UserIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="External user id")]
KQuery = Annotated[int, Query(ge=K_MIN, le=K_MAX, description=f"Number of items ({K_MIN}-{K_MAX}), ASCII digits")]


async def ascii_k(request: Request) -> None:
    """Apply :func:`parse_k` to the raw ``k`` before FastAPI parses it (pydantic's int parsing is not the
    fast route's rule); runs first because dependencies are solved before query parameters."""
    raw = request.query_params.getlist("k")
    _, error = parse_k(raw[-1] if raw else None)
    if error is not None:
        raise RequestValidationError([error])


def _compute(service: RecommendService, request: Request, user_id: str, k: int,
             ts: float | None) -> Recommendation | Response:
    try:
        rec = service.recommend(user_id, k, ts)
    except ModelUnavailable as exc:
        request.state.arm = exc.arm
        return error_response(503, "model_unavailable", str(exc))
    request.state.arm = rec.arm  # latency and error metrics are labelled by arm
    return rec


async def recommend_on_loop(user_id: UserIdPath, request: Request, service: ServiceDep, ts: EventTimeDep,
                            k: KQuery = K_DEFAULT) -> Response:
    """Top-k items for a user (ranking on the event loop: ~1 ms of CPU; a blocking sink in a thread)."""
    rec = _compute(service, request, user_id, k, ts)
    if isinstance(rec, Response):
        return rec
    if service.sink_blocks:
        await run_in_threadpool(service.log_exposure, rec)
    else:
        service.log_exposure(rec)
    return OrjsonResponse(rec.as_dict())


def recommend_in_threadpool(user_id: UserIdPath, request: Request, service: ServiceDep, ts: EventTimeDep,
                            k: KQuery = K_DEFAULT) -> Response:
    """Top-k items for a user (runs in Starlette's thread pool)."""
    rec = _compute(service, request, user_id, k, ts)
    if isinstance(rec, Response):
        return rec
    service.log_exposure(rec)
    return OrjsonResponse(rec.as_dict())


_USER_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$"))  # fullmatch: no trailing newline


def _invalid(loc: tuple[str, str], msg: str, kind: str) -> Response:
    return error_response(422, "invalid_request", validation_detail([{"loc": loc, "msg": msg, "type": kind}]))


async def recommend_fast(request: Request) -> Response:
    """``GET /recommend/{user_id}`` without FastAPI's dependency solver, which py-spy showed taking
    ~30% of a warm request. It validates exactly what the documented route below declares (user id
    pattern, ``1 <= k <= 100``, the sim-time header) and answers the same shapes; the documented
    route stays registered for OpenAPI and serves ``route_mode=threadpool``."""
    user_id = request.path_params["user_id"]
    if not _USER_ID.fullmatch(user_id):
        return _invalid(("path", "user_id"), f"String should match pattern '{ID_PATTERN}'", "string_pattern_mismatch")
    raw = request.query_params.getlist("k")
    k, error = parse_k(raw[-1] if raw else None)
    if error is not None:
        return error_response(422, "invalid_request", validation_detail([error]))
    try:
        ts = await get_event_time(request, request.headers.get("x-feedrec-sim-time"))
    except RequestValidationError as exc:
        return error_response(422, "invalid_request", validation_detail(exc.errors()))
    return await recommend_on_loop(user_id, request, request.app.state.serving.service, ts, k)


def build_router(mode: Literal["async", "threadpool"]) -> APIRouter:
    """The documented ``/recommend`` route, on the event loop (``async``) or in the thread pool."""
    router = APIRouter(prefix="/recommend", tags=["recommend"])
    endpoint = recommend_on_loop if mode == "async" else recommend_in_threadpool
    router.add_api_route("/{user_id}", endpoint, methods=["GET"], response_model=RecommendResponse,
                         dependencies=[Depends(ascii_k)],
                         responses={422: {"model": ErrorBody, "description": "Malformed user id or k"},
                                    503: {"model": ErrorBody, "description": "The routed model is not loaded"}})  # fmt: skip
    return router
