"""``POST /feedback``: an outcome (click, like, share, ...) for an item of a recommendation.

The outcome must name an item the response ``request_id`` showed to ``user_id``; otherwise it is
refused (counted in ``feedrec_feedback_rejected_total{reason}``): 404 ``unknown_request`` (no such
request in the retention window), 422 ``item_not_shown`` or ``user_mismatch``. A retry with an
``event_id`` already accepted for that request answers 200 and is not stored again. The answer is sent
after the sink stored the outcome (this route runs in the thread pool, so the sink's fsync never blocks
the loop); ``recorded`` says whether this call stored it, whatever the feature cache did.
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from abtest.events import OutcomeRejected
from serving.api_models import ErrorBody, FeedbackRequest, FeedbackResponse
from serving.deps import EventTimeDep, StateDep
from serving.pipeline import EventLogUnavailable
from serving.responses import OrjsonResponse, error_response

router = APIRouter(prefix="/feedback", tags=["feedback"])

#: What a refusal tells the client (the event log's own messages echo ids; these do not).
REJECTION_DETAIL = {
    "unknown_request": "no recommendation with this request_id in the retention window",
    "item_not_shown": "the item was not in that recommendation",
    "user_mismatch": "that recommendation was shown to another user",
}


@router.post("", response_model=FeedbackResponse,
             responses={400: {"model": ErrorBody, "description": "Body is not decodable"},
                        404: {"model": ErrorBody, "description": "Unknown request_id"},
                        413: {"model": ErrorBody, "description": "Body larger than FEEDREC_MAX_BODY_BYTES"},
                        422: {"model": ErrorBody, "description": "Item not shown, other user, or malformed body"},
                        503: {"model": ErrorBody, "description": "Event log unavailable; retry later"}})  # fmt: skip
def post_feedback(body: FeedbackRequest, state: StateDep, ts: EventTimeDep) -> Response:
    try:
        recorded = state.service.feedback(body.request_id, str(body.user_id), body.item_id, body.kind,
                                          event_id=body.event_id, ts=ts)  # fmt: skip
    except OutcomeRejected as exc:
        state.metrics.feedback_rejected.labels(exc.reason).inc()
        status = 404 if exc.reason == "unknown_request" else 422
        return error_response(status, exc.reason, REJECTION_DETAIL.get(exc.reason, "outcome rejected"))
    except EventLogUnavailable:
        return error_response(503, "event_log_unavailable", "the outcome could not be stored; retry later")
    return OrjsonResponse({"status": "ok", "recorded": recorded})
