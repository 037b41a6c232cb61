"""Request and response bodies of the HTTP API (also what ``/docs`` shows)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS

#: External ids on the wire: ASCII letters, digits and ``_ - . :``, at most 64 characters.
ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
ExternalId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
#: Client-chosen event ids (``abtest.events.EventId``): a retry with the same id is stored once.
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:@\-]{1,128}$"
WireId = ExternalId | Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)]
FeedbackKind = Literal[ENGAGEMENT_EVENTS + ("impression", "skip")]  # type: ignore[valid-type]


class RecommendedItem(BaseModel):
    item_id: int | str
    score: float
    rank: int


class RecommendResponse(BaseModel):
    user_id: str
    items: list[RecommendedItem]
    arm: str
    experiment: str | None
    model: str
    model_version: str
    request_id: str
    fallback: Literal["cold_start", "popular"] | None
    item_arms: list[str] | None = Field(
        default=None, description='Interleaving only: the arm credited with each item ("shared": both)')


class FeedbackRequest(BaseModel):
    """An outcome for an item shown in the response ``request_id`` to ``user_id``.

    ``event_id`` (optional) makes retries safe: an outcome with an id already accepted is not stored
    again (200, ``recorded: false``).
    """

    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
    user_id: WireId
    item_id: WireId
    kind: FeedbackKind
    event_id: Annotated[str, StringConstraints(pattern=EVENT_ID_PATTERN)] | None = None


class FeedbackResponse(BaseModel):
    status: Literal["ok"]
    recorded: bool


class ReloadRequest(BaseModel):
    """Optional new references (``name -> ref``); without them the configured refs are reloaded."""

    model_config = ConfigDict(extra="forbid")

    models: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,32}$")],
                 Annotated[str, StringConstraints(min_length=1, max_length=1024)]] = Field(default_factory=dict)
