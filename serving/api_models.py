"""Request and response bodies of the HTTP API (also what ``/docs`` and ``/openapi.json`` show).

The wire rules live here once: ``ID_PATTERN`` for external ids, ``K_PATTERN`` + ``K_MIN``..``K_MAX`` for
``k`` (both ``/recommend`` routes parse it with :func:`parse_k`), the int64 bounds of integer ids.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from feedrec_common.parquet_tables import ENGAGEMENT_EVENTS

#: External ids on the wire: ASCII letters, digits and ``_ - . :``, at most 64 characters.
ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
ExternalId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
#: Client-chosen event ids (``abtest.events.EventId``): a retry with the same id is stored once.
EVENT_ID_PATTERN = r"^[A-Za-z0-9._:@\-]{1,128}$"
#: Integer ids are int64. The bounds are written as the int64 extremes (an inclusive 2**63 - 1, not an
#: exclusive 2**63, which no int64 holds and which generated clients read as a float).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
WireId = ExternalId | Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX, json_schema_extra={"format": "int64"})]



def exact_int64_bounds(node: Any) -> Any:
    """Rewrite the bounds of every ``format: int64`` schema in an OpenAPI document as exact integers.

    FastAPI's OpenAPI models type ``minimum``/``maximum`` as float, so ``2**63 - 1`` came out as
    ``9.223372036854776e+18``: a float that is not an int64 (generated clients broke on it).
    """
    if isinstance(node, dict):
        if node.get("format") == "int64" and node.get("type") == "integer":
            node.update(minimum=INT64_MIN, maximum=INT64_MAX)
        for value in node.values():
            exact_int64_bounds(value)
    elif isinstance(node, list):
        for value in node:
            exact_int64_bounds(value)
    return node


#: ``k`` on the wire: ASCII digits only (``int()`` alone also takes ``５``, ``٥``, ``+5``, `` 5`` and
#: ``1_0``), then ``K_MIN <= k <= K_MAX``. One rule for both ``/recommend`` routes (:func:`parse_k`).
K_PATTERN = r"^[0-9]{1,16}$"
K_MIN, K_MAX, K_DEFAULT = 1, 100, 20
_K = re.compile(K_PATTERN.removeprefix("^").removesuffix("$"))


def parse_k(raw: str | None) -> tuple[int | None, dict[str, Any] | None]:
    """``(k, None)`` for a valid raw query value (``None``: the default), else ``(None, error)`` with the
    validation error (``loc``, ``msg``, ``type``) to answer 422 with."""
    if raw is None:
        return K_DEFAULT, None
    if not _K.fullmatch(raw):
        return None, {"loc": ("query", "k"), "msg": "Input should be an integer of ASCII digits",
                      "type": "int_parsing"}  # fmt: skip
    k = int(raw)
    if not K_MIN <= k <= K_MAX:
        return None, {"loc": ("query", "k"), "msg": f"Input should be between {K_MIN} and {K_MAX}",
                      "type": "range"}  # fmt: skip
    return k, None


class ErrorBody(BaseModel):
    """The one error shape of the API (``serving.responses.error_response``)."""

    error: str = Field(description="Machine-readable code (invalid_request, unknown_request, ...)")
    detail: Any = Field(default=None, description="Human-readable detail or the list of validation errors")
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
    logged: bool = Field(description="Whether the event log stored this list's exposure; false during an "
                                     "event-log outage (the list is served, feedback for it is refused)")


class FeedbackRequest(BaseModel):
    """An outcome for an item shown in the response ``request_id`` to ``user_id``.

    ``event_id`` (optional) makes retries safe: an outcome with an id already accepted for the same
    ``request_id`` is not stored again (200, ``recorded: false``). The same id under another request is
    another outcome.
    """

    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,64}$")]
    user_id: WireId
    item_id: WireId
    kind: FeedbackKind
    event_id: Annotated[str, StringConstraints(pattern=EVENT_ID_PATTERN)] | None = None


class FeedbackResponse(BaseModel):
    status: Literal["ok"]
    recorded: bool = Field(description="Whether this call stored the outcome in the event log: false for a "
                                       "retry of an event_id already stored for that request, and for "
                                       "impression/skip, which are accepted and not stored")


class ReloadRequest(BaseModel):
    """Optional new references (``name -> ref``); without them the configured refs are reloaded."""

    model_config = ConfigDict(extra="forbid")

    models: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,32}$")],
                 Annotated[str, StringConstraints(min_length=1, max_length=1024)]] = Field(default_factory=dict)


class ReloadResponse(BaseModel):
    status: Literal["reloaded"]
    models: dict[str, str] = Field(description="Served name -> loaded version")
