"""Request size limits, enforced before any route reads the body.

:class:`BodyLimitMiddleware` (pure ASGI) answers 413 ``body_too_large`` (the API's JSON error shape)
when a request declares a ``Content-Length`` above the limit, without reading a byte of the body; a
body without a length (chunked) is read up to the limit and refused as soon as it goes past it. A body
within the limit is handed to the app unchanged. Without it, a 100 MB ``POST /feedback`` was read and
parsed in full (+280 MB of RSS) just to be refused with 422.

Over-long ids need no middleware: every id on the wire is capped at 64 characters by its pattern
(``serving.api_models.ID_PATTERN``, 422). What uvicorn refuses before the app sees it (a request line
or header past its parser's limits) is answered by uvicorn itself, in plain text: no app code runs.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """413 for bodies larger than ``max_bytes`` (see the module docstring).

    Args:
        app (ASGIApp): The wrapped application.
        max_bytes (int): Largest body accepted.
        on_refuse (callable, optional): Called once per refused request (a metric).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, on_refuse: Callable[[], None] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refuse = on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        if declared is not None or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            # a declared length within the limit: the server (h11/httptools) delivers at most that much
            await self.app(scope, receive, send)
            return
        # Chunked (no Content-Length): read the body here, up to the limit, then replay it to the app.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay(chunks, message), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(chunks, None, receive), send)

    async def _refuse(self, send: Send) -> None:
        if self.on_refuse is not None:
            self.on_refuse()
        body = orjson.dumps({"error": "body_too_large",
                             "detail": f"request body larger than {self.max_bytes} bytes"})  # fmt: skip
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before the app runs
    return None


def _replay(chunks: list[bytes], final: Message | None, receive: Receive | None = None) -> Receive:
    """A ``receive`` that gives the buffered body as one message, then ``final`` (a disconnect) or the
    real ``receive`` (which waits for the client to disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        if final is not None:
            return final
        assert receive is not None
        return await receive()

    return replay
