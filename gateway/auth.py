"""Bearer tokens: every route but health needs one when the config names any.

A token is known by the SHA-256 of its value only; the hash of the presented token is compared
with every configured hash in constant time, so neither the answer nor its timing tells how
much of a guess was right. The token that matched is put in the request's state
(``request.state.token``), where routes read its tenant.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api_errors import ApiError
from gateway.settings import Token

__all__ = ["BearerAuth", "find_token", "tenant_of"]

OPEN_PATHS = frozenset({"/api/v1/health"})


def find_token(tokens: Sequence[Token], presented: str) -> Token | None:
    """The configured token whose hash is that of ``presented``, comparing with every one."""
    digest = hashlib.sha256(presented.encode()).hexdigest()
    found = None
    for token in tokens:
        if hmac.compare_digest(digest, token.sha256):
            found = token
    return found


class BearerAuth:
    """ASGI middleware: 401 JSON for a request without a valid ``Authorization: Bearer``."""

    def __init__(self, app: ASGIApp, tokens: Sequence[Token]) -> None:
        self.app = app
        self.tokens = tuple(tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        header = Request(scope).headers.get("authorization")
        scheme, _, presented = (header or "").partition(" ")
        if header is None:
            error = "the 'Authorization' header is missing; send 'Authorization: Bearer TOKEN'"
        elif scheme.lower() != "bearer" or not presented.strip():
            error = "the 'Authorization' header is not 'Bearer TOKEN'"
        else:
            token = find_token(self.tokens, presented.strip())
            if token is not None:
                scope.setdefault("state", {})["token"] = token
                await self.app(scope, receive, send)
                return
            error = "the bearer token in the 'Authorization' header is not valid"
        response = ApiError(401, "UNAUTHENTICATED", error,
                            {"WWW-Authenticate": 'Bearer realm="stepflow"'}).response()
        await response(scope, receive, send)


def tenant_of(request: Request) -> str | None:
    """The tenant of the request's token; None when it has none or no token is configured."""
    token: Token | None = getattr(request.state, "token", None)
    return token.tenant if token is not None else None
