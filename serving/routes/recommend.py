"""``GET /recommend/{user_id}?k=20``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from starlette.responses import Response

from serving.deps import ServiceDep
from serving.pipeline import ModelUnavailable, RecommendService
from serving.responses import OrjsonResponse, error_response
from serving.schemas import ID_PATTERN, RecommendResponse

UserIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="External user id")]
KQuery = Annotated[int, Query(ge=1, le=100, description="Number of items (1-100)")]


def _recommend(service: RecommendService, request: Request, user_id: str, k: int) -> Response:
    try:
        rec = service.recommend(user_id, k)
    except ModelUnavailable as exc:
        return error_response(503, "model_unavailable", str(exc))
    request.state.arm = rec.arm  # latency metrics are labelled by arm
    return OrjsonResponse(rec.as_dict())


async def recommend_on_loop(user_id: UserIdPath, request: Request, service: ServiceDep, k: KQuery = 20) -> Response:
    """Top-k items for a user (runs on the event loop: the work is ~1 ms of CPU)."""
    return _recommend(service, request, user_id, k)


def recommend_in_threadpool(user_id: UserIdPath, request: Request, service: ServiceDep, k: KQuery = 20) -> Response:
    """Top-k items for a user (runs in Starlette's thread pool)."""
    return _recommend(service, request, user_id, k)


def build_router(mode: Literal["async", "threadpool"]) -> APIRouter:
    router = APIRouter(prefix="/recommend", tags=["recommend"])
    endpoint = recommend_on_loop if mode == "async" else recommend_in_threadpool
    router.add_api_route("/{user_id}", endpoint, methods=["GET"], response_model=RecommendResponse,
                         responses={422: {"description": "Malformed user id or k"}})
    return router
