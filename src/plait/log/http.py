"""Log routes: the events in the log and its summary, for a workspace being served.

A served workspace cannot be opened by the CLI (DuckDB allows one writing process), so
``plait events`` and ``plait stats`` read a running server through these routes
(``--server URL --key KEY``). Events come without their personal fields unless an admin key
asks for them (``personal=true``), as ``plait events --json`` shows them to whoever holds the
workspace.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from plait.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from plait.workspace import Workspace


def _plain(obj: Any) -> Any:
    """Times and dates as the CLI prints them (``str``), everything else as JSON has it."""
    return json.loads(json.dumps(obj, default=str))


def log_router(ws: "Workspace", readers: "Callable[..., None]", admin: "Callable[..., None]") -> APIRouter:
    """``GET /v1/events`` and ``GET /v1/stats`` for ``readers`` (analyst, admin); personal fields
    for ``admin`` only."""
    router = APIRouter(prefix="/v1", tags=["log"])

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            raise HTTPException(400, {"code": "invalid_request", "message": str(e)}) from e

    @router.get("/events", dependencies=[Depends(readers)], summary="Events in the log, newest first, filtered")
    async def events(
        request: Request,
        limit: Annotated[int, Query(ge=0, le=1000)] = 20,
        event: str | None = None,
        type: str | None = None,
        channel: str | None = None,
        source: str | None = None,
        user: Annotated[str | None, Query(description="Only this userId")] = None,
        since: Annotated[str | None, Query(description="Event time from (ISO 8601; UTC unless it says otherwise)")] = None,
        until: Annotated[str | None, Query(description="Event time before (ISO 8601)")] = None,
        personal: Annotated[bool, Query(description="With personal fields (admin keys only)")] = False,
    ) -> list[dict[str, Any]]:
        if personal:
            admin(request)                   # 403 for any other role

        def work() -> list[dict[str, Any]]:
            rows = ws.log.events(limit=limit, event=event, type=type, channel=channel, source=source,
                                 user_id=user, since=since, until=until).to_pylist()
            return _plain([ws.log.reveal(r, personal=personal) for r in rows])

        return await run_in_threadpool(call, work)

    @router.get("/stats", dependencies=[Depends(readers)], summary="What is in the log: events, rejected, channels, sources")
    async def stats() -> dict[str, Any]:
        def work() -> dict[str, Any]:
            s = ws.log.stats()
            s["unconverted_amounts"] = ws.fx.unconverted()
            return _plain(s)

        return await run_in_threadpool(work)

    return router


__all__ = ["log_router"]
