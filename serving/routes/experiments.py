"""``GET /experiments/{key}/report[?format=html|md|json]``: the A/B report of a running experiment.

The route only gathers the inputs: the experiment's config (from the router), the events (from the
service's durable event log) and the guardrails (latency p99 and error rate per arm from the service's
own ``/metrics`` text, :func:`abtest.report.prometheus.guardrail_inputs_from_prometheus`); the analysis and the
page are :func:`abtest.report.render_report`. Errors (JSON): 404 unknown experiment, 503 no durable
event log configured (``FEEDREC_EVENTS_DIR=memory``), 409 no exposure of the experiment yet.

It reads the whole log and draws the plots (~1 s for 10^4 lists): an operator's page, not a hot path.
It runs in the thread pool.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query
from starlette.responses import HTMLResponse, Response

from serving.deps import StateDep
from serving.responses import error_response

router = APIRouter(prefix="/experiments", tags=["experiments"])

KeyPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$", description="Experiment key")]
FormatQuery = Annotated[Literal["html", "md", "json"], Query(description="html (default), md or json")]


@router.get("/{key}/report", response_class=HTMLResponse,
            responses={404: {"description": "Unknown experiment"}, 409: {"description": "No events yet"},
                       503: {"description": "No durable event log configured"}})  # fmt: skip
def experiment_report(key: KeyPath, state: StateDep, format: FormatQuery = "html") -> Response:
    from abtest.report.prometheus import guardrail_inputs_from_prometheus
    from abtest.report.render import ReportInputs, render_report

    lookup = getattr(state.service.router, "experiment", None)
    config = lookup(key) if lookup is not None else None
    if config is None:
        return error_response(404, "unknown_experiment", "no such experiment (see FEEDREC_EXPERIMENTS_DIR)")
    log = state.service.sink
    if not hasattr(log, "read_exposures"):
        return error_response(503, "no_event_log", "events are kept in memory only; set FEEDREC_EVENTS_DIR to a "
                                                   "directory to keep a durable event log and get reports")  # fmt: skip
    exposures, outcomes = log.read_exposures(), log.read_outcomes()
    if not (exposures["experiment"] == key).any():
        return error_response(409, "no_events", f"no exposure of experiment {key!r} in the event log yet")
    guardrails = guardrail_inputs_from_prometheus(state.metrics.exposition().decode())
    report = render_report(ReportInputs(exposures, outcomes, config, guardrails))
    if format == "md":
        return Response(report.markdown, media_type="text/markdown; charset=utf-8")
    if format == "json":
        return Response(orjson.dumps(report.summary(), default=_jsonable,
                                     option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS),
                        media_type="application/json")  # fmt: skip
    return HTMLResponse(report.html)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)
