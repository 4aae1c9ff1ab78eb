"""Flower's SuperLink middleware, each on the requests it acts on only.

Flower 1.42's SuperLink app runs every request through eight Starlette `BaseHTTPMiddleware`
layers; six of them act only on the Control API (/v1/control/) or only on the Fleet API
(/v1/fleet/) and pass everything else on. A `BaseHTTPMiddleware` costs a task, a task group and
memory streams per request even when it passes the request on: measured here, 4.3 ms per request
for the eight against 0.11 ms for none (plain Starlette, in process), and the Runtime API requests
of a round (the ServerApp's pushes and pulls, one per object) and the Fleet API ones (the
SuperNodes') all paid it, on the cores the training needs.

`scoped(middleware)` keeps Flower's list and order, but wraps each of those six in `Scoped`, a
plain ASGI middleware that sends a request through it only when it is in that middleware's scope,
the very test the middleware itself makes before acting (Flower's own predicate where it has one).
A Runtime API request then passes two layers (error translation and protobuf translation), a
Fleet API request four (with SuperNode authentication and the Fleet event log).
tests/fl/test_flower_internals.py fails when the pinned flwr changes the list or a middleware
starts acting outside its scope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.middleware import Middleware

CONTROL_PREFIX = "/v1/control/"
FLEET_PREFIX = "/v1/fleet/"

Applies = Callable[[str, str], bool]  # (method, path) -> whether the middleware acts on it


class Scoped:
    """Plain ASGI: a request in scope goes through `middleware` (built around the next app), any
    other straight to the next app."""

    def __init__(self, app: Any, middleware: type, applies: Applies, *args: Any, **kwargs: Any) -> None:
        self.app = app
        self.inner = middleware(app, *args, **kwargs)
        self.applies = applies

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.applies(scope.get("method", ""), scope.get("path", "")):
            await self.app(scope, receive, send)
        else:
            await self.inner(scope, receive, send)


def scopes() -> dict[type, Applies]:
    """Each scoped Flower middleware, and the requests it acts on."""
    from flwr.superlink.routers.control import middlewares as control
    from flwr.superlink.routers.fleet.middlewares import FleetEventLogMiddleware
    from flwr.superlink.routers.fleet.node_auth import NodeAuthMiddleware

    def control_api(method: str, path: str) -> bool:
        return path.startswith(CONTROL_PREFIX)

    def sensitive(method: str, path: str) -> bool:
        return (method, path) in control.CONTROL_SENSITIVE_ROUTE_KEYS

    def fleet_api(method: str, path: str) -> bool:
        return path.startswith(FLEET_PREFIX)

    return {
        control.ControlSensitiveResponseMiddleware: sensitive,
        control.ControlAuthenticationMiddleware: control_api,
        control.ControlLicenseMiddleware: control_api,
        control.ControlEventLogMiddleware: control_api,
        NodeAuthMiddleware: fleet_api,
        FleetEventLogMiddleware: fleet_api,
    }


def scoped(middleware: list[Middleware]) -> list[Middleware]:
    """Flower's middleware list, in its order, with each middleware of `scopes()` scoped."""
    known = scopes()
    return [
        Middleware(Scoped, m.cls, known[m.cls], *m.args, **m.kwargs) if m.cls in known else m  # type: ignore[arg-type, index]
        for m in middleware
    ]


def install() -> None:
    """Make the SuperLink app that `flwr.superlink.main.create_app` builds use scoped middleware."""
    from flwr.superlink import main

    flowers = main._get_middleware
    main._get_middleware = lambda: scoped(list(flowers()))  # type: ignore[assignment]
