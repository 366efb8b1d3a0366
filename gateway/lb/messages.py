"""HTTP/1.1 messages as the load balancer handles them: a client's request, read whole, and
answers written out as bytes.

Everything stays bytes from the socket to the socket: the proxy path never decodes a header it
only passes on.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

__all__ = ["HOP_BY_HOP", "Request", "answer", "json_answer", "status_line"]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
    b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
"""Headers of one connection, not of the message (RFC 9110 7.6.1): never passed on."""


class Request:
    """A client's request with its whole body; header names are lower-cased."""

    __slots__ = ("body", "client", "headers", "http11", "keep_alive", "method", "target")

    def __init__(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
        *, keep_alive: bool, http11: bool, client: bytes,
    ) -> None:
        self.method = method
        self.target = target
        """The request target as sent: path and query."""
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        """Whether the client keeps the connection open after the answer."""
        self.http11 = http11
        """HTTP/1.1 (chunked answers allowed) rather than 1.0."""
        self.client = client
        """The client's address."""

    @property
    def path(self) -> bytes:
        return self.target.partition(b"?")[0]

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower-case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def __repr__(self) -> str:
        return f"Request({self.method.decode()} {self.target.decode('latin-1')})"


_STATUS_LINES: dict[int, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 200 OK\\r\\n`` for ``status``."""
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        line = _STATUS_LINES[status] = f"HTTP/1.1 {status} {phrase}\r\n".encode()
    return line


def answer(
    status: int, body: bytes, content_type: bytes, headers: tuple[tuple[bytes, bytes], ...] = (),
    *, keep_alive: bool, head: bool = False,
) -> bytes:
    """A whole answer of the load balancer's own; ``head``: without its body."""
    lines = [status_line(status), b"content-type: ", content_type,
             b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n"]
    for name, value in headers:
        lines += [name, b": ", value, b"\r\n"]
    if not keep_alive:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    if not head:
        lines.append(body)
    return b"".join(lines)


def json_answer(
    status: int, document: Any, headers: tuple[tuple[bytes, bytes], ...] = (),
    *, keep_alive: bool, head: bool = False,
) -> bytes:
    """A JSON answer of the load balancer's own."""
    return answer(status, json.dumps(document).encode(), b"application/json", headers,
                  keep_alive=keep_alive, head=head)
