"""Uvicorn's HTTP protocols, with its own 400 answer in the project's error format.

A request the HTTP parser itself refuses (a Content-Length that is not a number, a malformed
request line or header) never reaches the app: uvicorn answers it with a plain-text "Invalid HTTP
request received.". These subclasses answer it as every other error is answered, JSON naming what
was wrong and what was expected. The parser's message is all uvicorn tells, so the field is the
request's framing as a whole. Written by hand because uvicorn has no hook for it but this method.
"""

from __future__ import annotations

import orjson

from closedloop.contracts import InvalidRequestError


def invalid_http_body(message: str) -> bytes:
    error = InvalidRequestError(
        f"The request is not valid HTTP/1.1: {message}",
        field="http",
        value=message,
        expected="a valid request line and headers, and a Content-Length that is a number of bytes",
        hint="Send a well-formed HTTP/1.1 request (any HTTP client library does).",
    )
    return orjson.dumps(error.to_payload())


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # uvicorn without httptools: its pure-Python parser
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]


class JsonErrorHttpProtocol(_Base):
    """Uvicorn's protocol (``uvicorn.run(..., http=JsonErrorHttpProtocol)``), its 400 in JSON."""

    def send_400_response(self, msg: str) -> None:
        body = invalid_http_body(msg)
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
            ]
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()
