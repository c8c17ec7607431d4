"""The collector's HTTP routes, speaking Segment's tracking API.

The routes read the raw body and answer with pre-encoded JSON: the framework does
no validation of its own (msgspec does it, an order of magnitude cheaper), so the
collector is limited by the log, not by FastAPI. The request schemas still appear
in the OpenAPI document.
"""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Request, Response

from plait.collect.collector import GroupCommitter
from plait.collect.intake import KINDS, Intake
from plait.errors import AuthError, EngineError, EventError, LimitError
from plait.events.contract import Batch, Call
from plait.log.store import Rejection, now_us

_OK = b'{"success":true}'
_enc = msgspec.json.Encoder()


def _json(status: int, body: bytes | dict) -> Response:
    return Response(body if isinstance(body, bytes) else _enc.encode(body), status_code=status, media_type="application/json")


def _schema(tp: type) -> dict:
    (s,), defs = msgspec.json.schema_components([tp], ref_template="#/components/schemas/{name}")
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": s}}}}


_RESPONSES = {
    200: {"description": "All events are durably in the log", "content": {"application/json": {"example": {"success": True}}}},
    400: {"description": "Malformed body or bad events (each named by index, field and reason); good events of a batch are kept"},
    401: {"description": "Missing, unknown or revoked write key"},
    413: {"description": "Body, event or batch larger than the configured limit"},
    503: {"description": "The log could not be written; retry"},
}


def collector_router(intake: Intake, committer: GroupCommitter) -> APIRouter:
    router = APIRouter(tags=["collect"])
    log = committer.log

    async def handle(kind: str, request: Request) -> Response:
        received = now_us()
        raw = await request.body()
        try:
            parsed = intake.parse(kind, raw, auth=request.headers.get("authorization"),
                                  encoding=request.headers.get("content-encoding"), received_at=received)
        except AuthError as e:
            return _json(401, {"success": False, "error": str(e)})
        except LimitError as e:
            return _json(413, {"success": False, "error": str(e)})
        except EventError as e:
            # The whole body is unusable; keep it in the dead-letter table so nothing is lost silently.
            rej = Rejection(reason=e.reason, field=e.field, origin=f"http:/v1/{kind}", position=e.index,
                            payload=raw[:65536].decode("utf-8", "replace"))
            try:
                await committer.append([], [rej])
            except Exception:  # noqa: BLE001 - the 400 still goes out
                pass
            return _json(400, {"success": False, "error": str(e), "errors": [e.as_dict()]})
        try:
            await committer.append(parsed.records, parsed.rejections)
        except EngineError as e:
            return _json(503, {"success": False, "error": f"the log could not be written: {e}"})
        if parsed.errors:
            return _json(400, {
                "success": False,
                "error": f"{len(parsed.errors)} of {len(parsed.errors) + len(parsed.records)} events rejected; "
                         "the others were accepted",
                "accepted": len(parsed.records),
                "errors": [e.as_dict() for e in parsed.errors],
            })
        return _json(200, _OK)

    def add(kind: str, body: type) -> None:
        async def endpoint(request: Request) -> Response:
            return await handle(kind, request)

        endpoint.__name__ = f"collect_{kind}"
        router.add_api_route(
            f"/v1/{kind}", endpoint, methods=["POST"], summary=f"Segment `{kind}` call" if kind != "batch" else "Segment batch",
            openapi_extra=_schema(body), responses=_RESPONSES,
        )

    for kind in KINDS:
        add(kind, Call)
    add("batch", Batch)

    @router.get("/health", tags=["ops"], summary="Liveness and log counts")
    async def health() -> Response:
        return _json(200, {"status": "ok", "events": log.count(), "rejected": log.rejected_count(),
                           "flushes": committer.flushes})

    return router
