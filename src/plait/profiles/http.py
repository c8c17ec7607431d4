"""Profile routes: read a customer by id or identifier, their timeline, and split them.

Reads need an ``analyst`` or ``admin`` key (HTTP Basic user name or ``Bearer``); a split
needs ``admin``. Collector keys only send events.
Blocking work (engine queries, a re-derivation after a split) runs in a worker thread.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from plait.collect.intake import basic_user
from plait.errors import AuthError, ConfigError, IdentityError

if TYPE_CHECKING:
    from collections.abc import Callable

    from plait.workspace import Workspace


class SplitRequest(BaseModel):
    """Identifiers to separate from the profile, as ``TYPE:VALUE``."""

    identifiers: list[str] = Field(min_length=1, examples=[["anonymous_id:kiosk-7"]])
    reason: str = Field(default="split by request", examples=["shared in-store kiosk"])


def key_check(ws: "Workspace", *roles: str) -> Any:
    """A FastAPI dependency admitting keys of ``roles`` (Basic user name or Bearer token):
    401 for a missing or unknown key, 403 for a key whose role may not do this."""
    allowed = roles or ("analyst", "admin")

    def authorised(request: Request) -> None:
        if not ws.settings.collector.require_write_key:
            return
        header = request.headers.get("authorization") or ""
        try:
            role = ws.keys.role_for(basic_user(header))        # Basic user name or Bearer token
        except AuthError as e:
            raise HTTPException(401, {"code": "unauthorized", "message": str(e)}) from e
        if role not in allowed:
            raise HTTPException(403, {"code": "forbidden", "message": f"a `{role}` key may not do this; "
                                      f"it needs one of: {', '.join(allowed)}"})

    return authorised


def profiles_router(ws: "Workspace", *, pending: "Callable[[], Any] | None" = None,
                    rebuilt: "Callable[[], Any] | None" = None) -> APIRouter:
    """Reads for analysts and admins; splitting and resolving for admins. Before a resolve,
    ``pending`` brings in what the collector acknowledged but has not loaded; after a resolve or
    a split, ``rebuilt`` gives decisions the rebuilt profiles."""
    router = APIRouter(prefix="/v1/profiles", tags=["profiles"])
    authorised = key_check(ws, "analyst", "admin")
    admin = key_check(ws, "admin")

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IdentityError as e:
            code = 404 if "no customer" in str(e) or "no profile" in str(e) else 400
            raise HTTPException(code, {"code": "not_found" if code == 404 else "invalid_request", "message": str(e)}) from e
        except ConfigError as e:
            raise HTTPException(400, {"code": "invalid_request", "message": str(e)}) from e

    @router.get("/lookup", summary="Find a customer by any identifier", dependencies=[Depends(authorised)])
    async def lookup(identifier: str) -> dict[str, Any]:
        """``?identifier=email:ann@example.com`` → the full profile."""
        return await run_in_threadpool(call, ws.profiles.get, identifier)

    @router.get("/{ref}", summary="A customer: identifiers, golden traits, features, links",
                dependencies=[Depends(authorised)])
    async def get(ref: str) -> dict[str, Any]:
        """``ref`` is a profile id (``prof_…``) or an identifier ``TYPE:VALUE``."""
        return await run_in_threadpool(call, ws.profiles.get, ref)

    @router.get("/{ref}/timeline", summary="The customer's events across channels, newest first",
                dependencies=[Depends(authorised)])
    async def timeline(ref: str, limit: Annotated[int, Query(ge=0, description="at most 1,000")] = 100,
                       before: Annotated[str | None, Query(description="ISO 8601 date or time (UTC unless it says)")] = None,
                       ) -> dict[str, Any]:
        rows = await run_in_threadpool(call, ws.profiles.timeline, ref, limit=min(limit, 1000), before=before)
        return {"profile_id": await run_in_threadpool(call, ws.profiles._id, ref), "events": rows}

    @router.post("/{ref}/split", summary="Unmerge: separate identifiers from this customer for good (admin)",
                 dependencies=[Depends(admin)])
    async def split(ref: str, body: SplitRequest) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            pid = ws.identity.resolve_ref(ref)
            if pid is None:
                raise IdentityError(f"no customer known by {ref!r}")
            result = ws.identity.split(pid, body.identifiers, reason=body.reason)
            ws.profiles.build()
            return result

        result = await run_in_threadpool(call, work)
        if rebuilt is not None:
            rebuilt()
        return result

    @router.post("/resolve", dependencies=[Depends(admin)],
                 summary="Resolve identity over the whole log (stitching + probabilistic matching), rebuild profiles (admin)")
    async def resolve_all() -> dict[str, Any]:
        def work() -> dict[str, Any]:
            if pending is not None:
                pending()
            ident, prof = ws.resolve()
            return {"identity": ident.as_dict(), "profiles": asdict(prof)}

        result = await run_in_threadpool(call, work)
        if rebuilt is not None:
            rebuilt()              # on the loop, as /v1/decide/reload
        return result

    return router


__all__ = ["SplitRequest", "key_check", "profiles_router"]
