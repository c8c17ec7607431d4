"""Consent and ledger routes: read and record choices; signed heads and proofs for partners."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from plait.errors import IdentityError, LedgerError

if TYPE_CHECKING:
    from collections.abc import Callable

    from plait.workspace import Workspace


class ConsentChoice(BaseModel):
    """One customer's choice for one purpose (and optionally one channel)."""

    identifier: str = Field(examples=["email:ann@example.com"])
    purpose: str = Field(examples=["marketing"])
    granted: bool
    channel: str | None = Field(default=None, examples=["email"])
    wording: str | None = None
    wording_version: str | None = Field(default=None, examples=["2025-03"])


def privacy_router(ws: "Workspace", readers: "Callable[..., None]", writers: "Callable[..., None]") -> APIRouter:
    """Reads for ``readers`` (analyst, admin); recording a choice for ``writers`` (collector, admin)."""
    router = APIRouter(prefix="/v1")

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (IdentityError, LedgerError) as e:
            raise HTTPException(400, {"code": "invalid_request", "message": str(e)}) from e

    @router.get("/consent/{ref}", tags=["consent"], summary="A customer's consent per purpose and channel",
                dependencies=[Depends(readers)])
    async def consent_state(ref: str) -> dict[str, Any]:
        return await run_in_threadpool(call, ws.consent.state, ref)

    @router.post("/consent", tags=["consent"], summary="Record a consent choice (log event + ledger entry)",
                 dependencies=[Depends(writers)])
    async def consent_set(body: ConsentChoice) -> dict[str, Any]:
        return await run_in_threadpool(call, ws.consent.set, body.identifier, body.purpose, body.granted,
                                       channel=body.channel, wording=body.wording,
                                       wording_version=body.wording_version, source="api")

    @router.get("/ledger/head", tags=["ledger"], summary="The signed tree head and the public key",
                dependencies=[Depends(readers)])
    async def head() -> dict[str, Any]:
        h = await run_in_threadpool(ws.ledger.head)
        return {"public_key": ws.ledger.public_key_hex, "head": h.as_dict()}

    @router.get("/ledger/proof/{index}", tags=["ledger"], summary="Inclusion proof of one entry",
                dependencies=[Depends(readers)])
    async def proof(index: int) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            h = ws.ledger.head()
            return {"type": "inclusion", "public_key": ws.ledger.public_key_hex, "head": h.as_dict(), "index": index,
                    "entry": ws.ledger.entry(index).decode(), "proof": ws.ledger.prove(index, h.size)}

        return await run_in_threadpool(call, work)

    @router.get("/ledger/consistency", tags=["ledger"], summary="Consistency proof between two tree sizes",
                dependencies=[Depends(readers)])
    async def consistency(first: int, second: int | None = None) -> dict[str, Any]:
        return {"first": first, "second": second or ws.ledger.size,
                "proof": await run_in_threadpool(call, ws.ledger.consistency, first, second)}

    return router


__all__ = ["ConsentChoice", "privacy_router"]
