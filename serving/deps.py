"""Typed FastAPI dependencies: routes declare what they need, the app state provides it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError

from serving.loading import ModelStore
from serving.pipeline import RecommendService
from serving.service_metrics import ServingMetrics
from serving.settings import ServingSettings


@dataclass(eq=False)
class ServingState:
    """Everything built at start-up (``app.state.serving``)."""

    settings: ServingSettings
    service: RecommendService
    store: ModelStore
    metrics: ServingMetrics
    notes: list[str] = field(default_factory=list)
    sink: Any = None  # the event sink (``service.sink``); closed at shutdown when the app opened it
    owns_sink: bool = False


# ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, which cost
# ~4 thread hops and ~0.4 ms per /recommend request (profiled in benchmarks/bench_serve.py).
async def get_state(request: Request) -> ServingState:
    return request.app.state.serving


async def get_service(request: Request) -> RecommendService:
    return request.app.state.serving.service


async def get_event_time(
    request: Request, x_feedrec_sim_time: Annotated[str | None, Header(include_in_schema=False)] = None
) -> float | None:
    """The ``X-Feedrec-Sim-Time`` header (Unix seconds) when ``allow_sim_time`` is on, else ``None``
    (events are stamped with the current time). A malformed value is a 422 only when it is honoured."""
    if x_feedrec_sim_time is None or not request.app.state.serving.settings.allow_sim_time:
        return None
    try:
        ts = float(x_feedrec_sim_time)
    except ValueError:
        ts = math.nan
    if not (math.isfinite(ts) and ts > 0):
        raise RequestValidationError([{"loc": ("header", "x-feedrec-sim-time"), "type": "value_error",
                                       "msg": "must be positive Unix seconds (a float)"}])  # fmt: skip
    return ts


StateDep = Annotated[ServingState, Depends(get_state)]
ServiceDep = Annotated[RecommendService, Depends(get_service)]
EventTimeDep = Annotated[float | None, Depends(get_event_time)]
