"""``POST /v1/decide``: the next best actions over HTTP, answered outside the framework.

Like the collector, the decision route is hot: :class:`FastDecide` is a plain ASGI middleware
that reads the body, checks the key (a ``collector`` or ``admin`` key: the apps that send events
ask for decisions), decodes with msgspec, decides and writes JSON. The FastAPI routes document
it in the OpenAPI schema and add the control plane: the rules in force and a reload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
from fastapi import APIRouter, Depends, Request, Response

from plait.collect.http import answer_post, error_body, headers, json_body
from plait.collect.intake import basic_user
from plait.errors import AuthError, DecisionError, EngineError, RuleError

if TYPE_CHECKING:
    from plait.decide.engine import Decider
    from plait.decide.workers import Workers
    from plait.workspace import Workspace

PATH = "/v1/decide"
MAX_BODY = 64 * 1024
_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(dict)


class DecideRequest(msgspec.Struct, omit_defaults=True):
    """A customer (profile id or ``type:value`` identifier) and a placement, or an event; optional
    extra context, a cap on the number of actions, and a decision time (replays)."""

    customer: str | None = None
    event: dict[str, Any] | None = None
    placement: str | None = None
    context: dict[str, Any] | None = None
    max_actions: int | None = None
    now: str | float | None = None


def answer(decider: "Decider", request: Any) -> tuple[int, bytes]:
    """One decision as ``(HTTP status, JSON body)``: a bad request is a 400 naming the field."""
    try:
        return 200, _enc.encode(decider.decide(request).as_dict())
    except DecisionError as e:
        return 400, error_body("invalid_request", str(e), field=e.field)
    except EngineError as e:                 # (the online store went away: retry later)
        return 503, error_body("unavailable", str(e))


class Decide:
    """Request bytes in, ``(status, JSON body)`` out."""

    def __init__(self, decider: "Decider", ws: "Workspace", workers: "Workers | None" = None) -> None:
        self.decider = decider
        self.ws = ws
        self.workers = workers

    def _refused(self, raw: bytes, auth: str | None) -> tuple[int, bytes] | dict[str, Any]:
        """An error answer, or the decoded request."""
        if self.ws.settings.collector.require_write_key:
            try:
                role = self.ws.keys.role_for(basic_user(auth))     # Basic user name or Bearer token
            except AuthError as e:
                return 401, error_body("unauthorized", str(e))
            if role not in ("collector", "admin"):
                return 403, error_body("forbidden", f"a `{role}` key may not ask for decisions; use a collector or admin key")
        try:
            return _dec.decode(raw)
        except msgspec.DecodeError as e:
            return 400, error_body("invalid_request", f"the body is not a JSON object: {e}")

    async def handle(self, raw: bytes, auth: str | None) -> tuple[int, bytes]:
        """Check the key, decode, and decide here or, with decide workers, in the customer's worker."""
        req = self._refused(raw, auth)
        if isinstance(req, tuple):
            return req
        return answer(self.decider, req) if self.workers is None else await self.workers.ask(req, raw)

    def reload_profiles(self) -> tuple[int, int]:
        """Give this process and every decide worker the customers' profiles as the workspace
        holds them now; ``(customers, processes)``."""
        from plait.profiles.online import load

        fresh = load(self.ws)
        self.decider.store = fresh
        others = self.workers.reload(fresh, str(self.ws.path)) if self.workers is not None else 0
        return len(fresh), 1 + others


class FastDecide:
    """Pure ASGI middleware answering ``POST /v1/decide``; everything else goes on to the app."""

    def __init__(self, app: Any, decide: Decide) -> None:
        self.app = app
        self.decide = decide

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != PATH or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        (auth,) = headers(scope, b"authorization")
        await answer_post(receive, send, MAX_BODY, f"a decision request is at most {MAX_BODY} bytes",
                          lambda raw: self.decide.handle(raw, auth))


def decide_router(decide: Decide, analyst: Any, admin: Any) -> APIRouter:
    """Documented routes; in a served app :class:`FastDecide` answers ``POST /v1/decide`` first."""
    router = APIRouter(tags=["decide"])
    @router.post(PATH, summary="The next best actions for a customer or an event", openapi_extra=json_body(DecideRequest),
                 responses={200: {"description": "Ranked actions with reasons; rejected offers with why"},
                            400: {"description": "A bad request, naming the field"},
                            401: {"description": "Missing or unknown key"}})
    async def decide_route(request: Request) -> Response:
        status, body = await decide.handle(await request.body(), request.headers.get("authorization"))
        return Response(body, status_code=status, media_type="application/json")

    @router.get(f"{PATH}/rules", dependencies=[Depends(analyst)], summary="The rules and offers in force")
    async def rules() -> dict[str, Any]:
        b = decide.decider.book
        return {"version": b.version, "rules": sorted(b.rules), "offers": sorted(b.offers),
                "last_error": str(b.last_error) if b.last_error else None}

    @router.post(f"{PATH}/reload", dependencies=[Depends(admin)],
                 summary="Reload the rule files now and the customers' profiles from the workspace")
    async def reload() -> dict[str, Any]:
        b = decide.decider.book
        try:
            b.refresh()
        except RuleError as e:
            return {"version": b.version, "error": str(e)}
        customers, processes = decide.reload_profiles()
        return {"version": b.version, "customers": customers, "processes": processes,
                "last_error": str(b.last_error) if b.last_error else None}

    return router


__all__ = ["PATH", "Decide", "DecideRequest", "FastDecide", "answer", "decide_router"]
