"""Typed FastAPI dependencies: routes declare what they need, the app state provides it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from serving.loading import ModelStore
from serving.metrics import ServingMetrics
from serving.pipeline import RecommendService
from serving.settings import ServingSettings


@dataclass(eq=False)
class ServingState:
    """Everything built at start-up (``app.state.serving``)."""

    settings: ServingSettings
    service: RecommendService
    store: ModelStore
    metrics: ServingMetrics
    notes: list[str] = field(default_factory=list)


# ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, which cost
# ~4 thread hops and ~0.4 ms per /recommend request (profiled in benchmarks/bench_serve.py).
async def get_state(request: Request) -> ServingState:
    return request.app.state.serving


async def get_service(request: Request) -> RecommendService:
    return request.app.state.serving.service


StateDep = Annotated[ServingState, Depends(get_state)]
ServiceDep = Annotated[RecommendService, Depends(get_service)]
