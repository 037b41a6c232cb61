"""uvicorn's httptools protocol with the API's JSON error shape for what the HTTP parser refuses.

Some requests never reach the app: a request line the parser rejects (uvicorn answers a plain-text
``400 Invalid HTTP request received.``). :class:`JsonErrorHttpProtocol` answers those in the API's
shape, ``{"error": code, "detail": ...}`` with ``application/json``, and caps the request target
(path + query) at :data:`MAX_TARGET_BYTES`: longer is ``414 uri_too_long``. (Ids are capped at 64
characters by their pattern, 422 from the app; the cap here bounds what the parser buffers before any
of that runs: without it a ~64 KiB user id got the parser's plain-text 400.)

``python -m serving`` runs uvicorn with this protocol (``http=JsonErrorHttpProtocol``).
"""

from __future__ import annotations

from http import HTTPStatus

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Longest request target (path and query string) accepted.
MAX_TARGET_BYTES = 8 * 1024


class _TargetTooLong(Exception):
    """Raised from the parser's URL callback; httptools turns it into a parser error."""


class JsonErrorHttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose parser-level refusals are JSON (see the module docstring)."""

    _target_too_long = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._target_too_long = False

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_TARGET_BYTES:
            self._target_too_long = True
            raise _TargetTooLong

    def send_400_response(self, msg: str) -> None:
        if self._target_too_long:
            status, body = 414, {"error": "uri_too_long", "detail": f"request target longer than {MAX_TARGET_BYTES} bytes"}
        else:
            status, body = 400, {"error": "bad_request", "detail": msg}
        payload = orjson.dumps(body)
        content = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: application/json\r\n", b"content-length: " + str(len(payload)).encode() + b"\r\n",
                        b"connection: close\r\n", b"\r\n", payload])  # fmt: skip
        self.transport.write(b"".join(content))
        self.transport.close()
