"""Consent, erasure and ledger routes: read and record choices; erase people (admin); signed
heads and proofs for partners."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from plait.errors import ConfigError, IdentityError, LedgerError

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


class ErasureRequest(BaseModel):
    """People to erase together (any identifier of each), and why."""

    identifiers: list[str] = Field(min_length=1, max_length=10_000, examples=[["email:ann@example.com"]])
    reason: str = Field(default="erasure request", max_length=1000)


def privacy_router(ws: "Workspace", readers: "Callable[..., None]", writers: "Callable[..., None]",
                   admin: "Callable[..., None] | None" = None, *,
                   pending: "Callable[[], Any] | None" = None,
                   rebuilt: "Callable[[], Any] | None" = None) -> APIRouter:
    """Reads for ``readers`` (analyst, admin); recording a choice for ``writers`` (collector,
    admin); erasure for ``admin``: ``pending`` first brings into the log what the collector has
    acknowledged but not yet loaded (so the erasure covers it), and ``rebuilt`` afterwards gives
    decisions the rebuilt profiles."""
    router = APIRouter(prefix="/v1")

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (IdentityError, LedgerError, ConfigError) as e:
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

    if admin is not None:
        @router.post("/privacy/erasures", tags=["privacy"], dependencies=[Depends(admin)],
                     summary="Erase people: destroy their keys, rebuild identity and profiles, record it (admin)")
        async def erase(body: ErasureRequest) -> dict[str, Any]:
            def work() -> Any:
                if pending is not None:
                    pending()
                return ws.rights.erase_many(body.identifiers, reason=body.reason)

            batch = await run_in_threadpool(call, work)
            if batch.erased and rebuilt is not None:
                rebuilt()     # on the loop, as /v1/decide/reload: no decision goes on with an erased profile
            return batch.as_dict()

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


__all__ = ["ConsentChoice", "ErasureRequest", "privacy_router"]
