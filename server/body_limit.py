"""Refuse oversized request bodies with a 413 before they are read into memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.errors import PayloadTooLargeError, error_json
from server.registry.models import MAX_DOCUMENT_BYTES

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """``admin_max_bytes`` applies under /admin, where a target's documents may run to megabytes."""

    def __init__(self, app: ASGIApp, max_bytes: int, admin_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.admin_max_bytes = admin_max_bytes or max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        admin = scope.get("path", "").startswith("/admin")
        max_bytes = self.admin_max_bytes if admin else self.max_bytes
        error = PayloadTooLargeError(f"the request body is larger than {max_bytes} bytes"
                                     + (f" (a target's documents: at most {MAX_DOCUMENT_BYTES} bytes of text in all)"
                                        if admin else ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                await error_json(error)(scope, receive, send)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await error_json(error)(scope, receive, send)
