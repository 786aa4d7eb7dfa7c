"""What every response of the web app carries, and how much a request may send.

Pages that authorise payouts must not run a script the app did not serve, be framed by another site, or tell
other sites where the officer was: a Content-Security-Policy with no inline script or style (htmx and the
stylesheet come from /static), frame-ancestors 'none', no referrer. The API docs (/docs, /redoc) load
Swagger's assets and inline bootstrap script, so they get a policy of their own that still forbids framing.

A request body larger than `max_body` is refused with 413 before the app reads it: by its Content-Length,
and, when it streams without one, as soon as the bytes received pass the limit."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web.problems import Problem, response

PAGE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
DOCS_POLICY = "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
DOCS = ("/docs", "/redoc")


def headers_for(path: str, *, https: bool) -> list[tuple[bytes, bytes]]:
    policy = DOCS_POLICY if path.startswith(DOCS) else PAGE_POLICY
    out = [
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    if https:
        out.append((b"strict-transport-security", b"max-age=31536000"))
    return out


class BodyTooLarge(HTTPException):
    """Raised while the app reads a streamed body past the limit. An HTTPException, so that FastAPI's body
    parsing passes it on (it turns any other error into 400) and the answer is 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request is larger than {limit // 2**20} MB")


class SecurityMiddleware:
    """The headers above on every HTTP response, and the request body limit."""

    def __init__(self, app: ASGIApp, *, max_body: int) -> None:
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = headers_for(scope.get("path", ""), https=scope.get("scheme") == "https")
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await self._too_large(scope, receive, send, extra)
            return
        received = 0
        started = False

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                known = {k.lower() for k, _ in message.get("headers", [])}
                message = {
                    **message,
                    "headers": [*message.get("headers", []), *(h for h in extra if h[0] not in known)],
                }
            await send(message)

        try:
            await self.app(scope, limited, with_headers)
        except BodyTooLarge:
            if not started:
                await self._too_large(scope, receive, send, extra)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, extra: list[tuple[bytes, bytes]]) -> None:
        answer = too_large(BodyTooLarge(self.max_body))
        answer.headers.update({k.decode(): v.decode() for k, v in extra})
        await answer(scope, receive, send)


def too_large(exc: BodyTooLarge) -> Response:
    """The refusal as every other is answered (web/problems.py), here and from the app's exception handler."""
    return response(Problem("RequestTooLarge", str(exc.detail)))
