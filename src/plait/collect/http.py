"""The collector's HTTP routes, speaking Segment's tracking API.

Collection is the hottest path Plait has, so ``POST /v1/{call}`` is answered by a
plain ASGI middleware (:class:`FastCollect`) that reads the body, hands it to
:class:`~plait.collect.intake.Intake` and the group committer, and writes pre-encoded
JSON — no framework routing or validation in between (msgspec validates, an order of
magnitude cheaper). The same :func:`Collect.handle` also backs ordinary FastAPI
routes, which put the request schemas in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from fastapi import APIRouter, Request, Response

from plait.collect.collector import GroupCommitter
from plait.collect.intake import Intake
from plait.errors import AuthError, EngineError, EventError, LimitError
from plait.events.contract import CALL_TYPES, Batch, Call
from plait.log.store import Rejection, now_us

_OK = b'{"success":true}'
_enc = msgspec.json.Encoder()
PATHS = {f"/v1/{k}": k for k in (*CALL_TYPES, "batch")}


def error_body(code: str, message: str, **extra: Any) -> bytes:
    """A JSON error answer (the collector's and the decision route's)."""
    # `code` and `message` are what Segment's client libraries read from an error body.
    return _enc.encode({"success": False, "code": code, "message": message, "error": message, **extra})


class Collect:
    """Request bytes in, ``(status, JSON body)`` out; 200 only once the events are durable."""

    def __init__(self, intake: Intake, committer: GroupCommitter) -> None:
        self.intake = intake
        self.committer = committer

    async def handle(self, kind: str, raw: bytes, auth: str | None, encoding: str | None) -> tuple[int, bytes]:
        received = now_us()
        try:
            parsed = self.intake.parse(kind, raw, auth=auth, encoding=encoding, received_at=received)
        except AuthError as e:
            return 401, error_body("unauthorized", str(e))
        except LimitError as e:
            return 413, error_body("payload_too_large", str(e))
        except EventError as e:
            # The whole body is unusable; keep it in the dead-letter table so nothing is lost silently.
            rej = Rejection(reason=e.reason, field=e.field, origin=f"http:/v1/{kind}", position=e.index,
                            payload=raw[:65536].decode("utf-8", "replace"))
            try:
                await self.committer.append([], [rej])
            except Exception:  # noqa: BLE001 - the 400 still goes out
                pass
            return 400, error_body("invalid_request", str(e), errors=[e.as_dict()])
        try:
            await self.committer.append(parsed.records, parsed.rejections)
        except EngineError as e:
            return 503, error_body("unavailable", f"the log could not be written: {e}")
        if parsed.errors:
            message = (str(parsed.errors[0]) if kind != "batch" else    # one event: its own reason
                       f"{len(parsed.errors)} of {len(parsed.errors) + len(parsed.records)} events rejected; the others were accepted")
            return 400, error_body("invalid_request", message,
                                   accepted=len(parsed.records), errors=[e.as_dict() for e in parsed.errors])
        return 200, _OK


class FastCollect:
    """Pure ASGI middleware answering ``POST /v1/{call}``; everything else goes on to the app."""

    def __init__(self, app: Any, collect: Collect) -> None:
        self.app = app
        self.collect = collect

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = PATHS.get(scope.get("path", "")) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        auth, encoding = headers(scope, b"authorization", b"content-encoding")
        limit = self.collect.intake.settings.max_request_bytes
        await answer_post(receive, send, limit, f"request body is larger than the {limit}-byte limit",
                          lambda raw: self.collect.handle(kind, raw, auth, encoding))


def headers(scope: dict, *names: bytes) -> list[str | None]:
    """The values of the named request headers (lower-case names; ``None`` where absent)."""
    found: dict[bytes, str | None] = dict.fromkeys(names)
    for k, v in scope["headers"]:
        if k in found:
            found[k] = v.decode("latin-1")
    return list(found.values())


async def answer_post(receive: Any, send: Any, limit: int, too_large: str,
                      handle: Callable[[bytes], Awaitable[tuple[int, bytes]]]) -> None:
    """Read a raw route's body (413 past ``limit``), hand it to ``handle``, write its JSON answer."""
    try:
        raw = await read_body(receive, limit)
    except LimitError:
        status, body = 413, error_body("payload_too_large", too_large)
    else:
        if raw is None:
            return
        status, body = await handle(raw)
    await respond(send, status, body)


async def read_body(receive: Any, limit: int) -> bytes | None:
    """An ASGI request's body; ``None`` if the client went away; :class:`LimitError` as soon as
    it passes ``limit`` bytes (reading stops: the body is refused whatever it holds)."""
    chunks: list[bytes] = []
    size, more = 0, True
    while more:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise LimitError(f"request body is larger than the {limit}-byte limit")
        chunks.append(chunk)
        more = msg.get("more_body", False)
    return b"".join(chunks)


async def respond(send: Any, status: int, body: bytes) -> None:
    """A JSON answer on a raw ASGI route."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _json(status: int, body: bytes | dict) -> Response:
    return Response(body if isinstance(body, bytes) else _enc.encode(body), status_code=status, media_type="application/json")


# The raw routes' bodies are documented from the msgspec types that decode them; the schemas
# those refer to are kept here and added to the app's OpenAPI components (:func:`document_bodies`).
BODY_SCHEMAS: dict[str, dict] = {}


def json_body(tp: type) -> dict:
    """``openapi_extra`` documenting a route's JSON request body as the msgspec type ``tp``."""
    (s,), components = msgspec.json.schema_components([tp], ref_template="#/components/schemas/{name}")
    BODY_SCHEMAS.update(components)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": s}}}}


def document_bodies(app: Any) -> None:
    """Let ``app``'s OpenAPI document define the schemas :func:`json_body` bodies refer to."""
    base = app.openapi

    def openapi() -> dict:
        doc = base()
        doc.setdefault("components", {}).setdefault("schemas", {}).update(BODY_SCHEMAS)
        return doc

    app.openapi = openapi


_RESPONSES = {
    200: {"description": "All events are durably in the log", "content": {"application/json": {"example": {"success": True}}}},
    400: {"description": "Malformed body or bad events (each named by index, field and reason); good events of a batch are kept"},
    401: {"description": "Missing, unknown or revoked write key"},
    413: {"description": "Body, event or batch larger than the configured limit"},
    503: {"description": "The log could not be written; retry"},
}


def collector_router(collect: Collect) -> APIRouter:
    """Documented routes; in a served app :class:`FastCollect` answers them first."""
    router = APIRouter(tags=["collect"])
    committer = collect.committer
    log = committer.log

    def add(kind: str, body: type) -> None:
        async def endpoint(request: Request) -> Response:
            status, payload = await collect.handle(kind, await request.body(), request.headers.get("authorization"),
                                                   request.headers.get("content-encoding"))
            return _json(status, payload)

        endpoint.__name__ = f"collect_{kind}"
        router.add_api_route(
            f"/v1/{kind}", endpoint, methods=["POST"], summary=f"Segment `{kind}` call" if kind != "batch" else "Segment batch",
            openapi_extra=json_body(body), responses=_RESPONSES,
        )

    for kind in CALL_TYPES:
        add(kind, Call)
    add("batch", Batch)

    @router.get("/health", tags=["ops"], summary="Liveness and log counts")
    async def health(request: Request) -> Response:
        out = {"status": "ok", "events": log.count(), "rejected": log.rejected_count(), "flushes": committer.flushes}
        loader = getattr(request.app.state, "journal_loader", None)
        if loader is not None:
            # Acknowledged by the fronts, not yet in the log (0 once the loader has caught up).
            out["journal"] = loader.status()
        fronts = getattr(request.app.state, "fronts", None)
        if fronts is not None:
            out["fronts"] = fronts.status()
        return _json(200, out)

    return router


# Files sent to a running server for bulk import (``POST /v1/imports``): each is streamed to disk
# under the workspace and imported like ``plait ingest`` would (the CLI cannot open a served
# workspace). The front processes pass a request to the writer whole, so this is also their cap.
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
UPLOADS = "uploads"


def imports_router(ws: Any, admin: Callable[..., None]) -> APIRouter:
    """``POST /v1/imports``: a JSONL, CSV or Parquet file as the body, imported into the log."""
    import shutil
    import uuid
    from pathlib import Path

    from fastapi import Depends, HTTPException, Query
    from fastapi.concurrency import run_in_threadpool

    from plait.collect.bulk import parse_mapping
    from plait.errors import ImportFormatError, PlaitError

    router = APIRouter(tags=["collect"])
    # Uploads a crash left behind were never imported and hold personal data: not kept.
    shutil.rmtree(ws.path / UPLOADS, ignore_errors=True)

    @router.post("/v1/imports", dependencies=[Depends(admin)],
                 summary="Bulk-import a file (the body) as `plait ingest` does: resumable, no duplicates (admin)",
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
    async def import_file(
        request: Request,
        filename: str = Query(max_length=200, description="The file's name; its extension says the format "
                              "(.jsonl, .jsonl.gz, .csv, .csv.gz, .parquet)", examples=["pos-2025-03-01.parquet"]),
        map: list[str] = Query(default=[], description="TARGET=COLUMN for CSV/Parquet, e.g. user_id=customer"),
        set: list[str] = Query(default=[], description="TARGET=VALUE constant, e.g. event=Order Completed"),
        only_mapped: bool = False,
        source: str | None = Query(default=None, max_length=200),
    ) -> dict[str, Any]:
        name = Path(filename).name
        if not name or name in (".", "..") or name != filename:
            raise HTTPException(400, {"code": "invalid_request", "message": f"filename {filename!r} is not a plain file name"})
        try:
            mapping = parse_mapping(map, set)
        except ImportFormatError as e:
            raise HTTPException(400, {"code": "invalid_request", "message": Exception.__str__(e)}) from e
        folder = ws.path / UPLOADS / uuid.uuid4().hex
        folder.mkdir(parents=True)
        path = folder / name
        try:
            size = 0
            with path.open("wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise HTTPException(413, {"code": "payload_too_large", "message":
                                                  f"the file is larger than {MAX_UPLOAD_BYTES >> 20} MB; split it, "
                                                  "or stop the server and run `plait ingest`"})
                    f.write(chunk)

            try:
                report = await run_in_threadpool(ws.importer.file, path, source=source, mapping=mapping or None,
                                                 only_mapped=only_mapped)
            except PlaitError as e:
                raise HTTPException(400, {"code": "invalid_request", "message": Exception.__str__(e).replace(
                    str(path), name), "hint": e.hint}) from e
        finally:
            shutil.rmtree(folder, ignore_errors=True)     # the upload holds personal data: never kept
        return {"file": name, "rows": report.rows, "inserted": report.inserted, "duplicates": report.duplicates,
                "rejected": report.rejected, "skipped": report.skipped, "seconds": round(report.seconds, 3)}

    return router


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    """A key to create: its name, role (collector, analyst, admin) and the source it sends as."""
    name: str
    role: str = "collector"
    source: str | None = None


def keys_router(ws: Any, admin: Callable[..., None]) -> APIRouter:
    """``/v1/keys`` (admin): list, create and revoke keys while the workspace is served."""
    from fastapi import Depends, HTTPException
    from fastapi.concurrency import run_in_threadpool

    from plait.errors import ConfigError

    router = APIRouter(prefix="/v1/keys", tags=["keys"], dependencies=[Depends(admin)])

    @router.get("", summary="The keys: name, source, role, created and revoked (never the key itself)")
    async def list_keys() -> list[dict[str, Any]]:
        rows = await run_in_threadpool(ws.keys.list)
        return [{"name": k.name, "source": k.source, "role": k.role, "created_at": k.created_at.isoformat(),
                 "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None} for k in rows]

    @router.post("", summary="Create a key; it is shown once, in this answer (in force in every front within ~1 s)",
                 openapi_extra=json_body(NewKey))
    async def create_key(request: Request) -> Response:
        try:
            body = msgspec.json.decode(await request.body(), type=NewKey)
            key = await run_in_threadpool(ws.keys.create, body.name, source=body.source, role=body.role)
        except (msgspec.ValidationError, msgspec.DecodeError, ConfigError) as e:
            raise HTTPException(400, {"code": "invalid_request", "message": str(e)}) from e
        return _json(201, {"name": body.name.strip(), "role": body.role, "source": body.source or body.name.strip(),
                           "key": key})

    @router.delete("/{name}", summary="Revoke every active key of this name (refused by every front within ~1 s)")
    async def revoke_key(name: str) -> dict[str, Any]:
        try:
            return {"name": name, "revoked": await run_in_threadpool(ws.keys.revoke, name)}
        except ConfigError as e:
            raise HTTPException(404, {"code": "not_found", "message": str(e)}) from e

    return router
