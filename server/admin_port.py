"""Keep ``/admin`` off the public port when an admin port is configured.

Kubernetes NetworkPolicies filter by port, not by path: serving the admin API on its own port is what lets a policy
keep it internal while the OpenAI API stays public. One uvicorn server listens on both sockets; this middleware
answers 404 to ``/admin`` requests that arrived on any port but the admin one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from server.errors import NotFoundError, error_json

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send


class AdminPortMiddleware:
    def __init__(self, app: ASGIApp, admin_port: int) -> None:
        self.app = app
        self.admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] == "/admin" or scope["path"].startswith("/admin/")):
            server = scope.get("server")
            if server is None or server[1] != self.admin_port:
                error = NotFoundError(f"the admin API is served on its own port ({self.admin_port}), not this one")
                await error_json(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)
