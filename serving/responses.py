"""orjson JSON responses (FastAPI's ORJSONResponse is deprecated; this is the same few lines)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class OrjsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_response(status: int, error: str, detail: Any = None) -> OrjsonResponse:
    """The one error shape of the API: ``{"error": <code>, "detail": ...}``."""
    return OrjsonResponse({"error": error, "detail": detail}, status_code=status)


def validation_detail(errors: list[dict[str, Any]], limit: int = 20) -> list[dict[str, Any]]:
    """Location, message and type of each validation error; never the input (it could be megabytes
    or odd bytes)."""
    return [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in errors[:limit]
    ]
