"""``POST /feedback``: an outcome (click, like, share, ...) for an item of a recommendation."""

from __future__ import annotations

from fastapi import APIRouter

from serving.deps import ServiceDep
from serving.schemas import FeedbackRequest, FeedbackResponse

router = APIRouter(prefix="/feedback", tags=["feedback"])


@router.post("", response_model=FeedbackResponse)
def post_feedback(body: FeedbackRequest, service: ServiceDep) -> FeedbackResponse:
    recorded = service.feedback(body.request_id, str(body.user_id), str(body.item_id), body.kind)
    return FeedbackResponse(status="ok", recorded=recorded)
