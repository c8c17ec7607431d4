"""Analytics routes: what the models learnt about a customer, segments, rules and the registry.

Reads need an ``analyst`` or ``admin`` key; fitting (``POST /v1/analytics/{analysis}``) and
defining rule segments need ``admin``. Every read respects what the models were allowed to
see: a customer who withdrew analytics consent has no rows in any ``analytics_*`` table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError, validate_call

from plait.errors import ConfigError, IdentityError, ModelError
from plait.profiles.http import key_check

if TYPE_CHECKING:
    from plait.workspace import Workspace


class SegmentRequest(BaseModel):
    name: str = Field(examples=["loyal"])
    condition: dict[str, Any] = Field(examples=[{"field": "features.orders", "op": ">=", "value": 5}])


class FitRequest(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"calibration_end": "2025-05-01"}])


def analytics_router(ws: "Workspace") -> APIRouter:
    router = APIRouter(prefix="/v1/analytics", tags=["analytics"])
    read = key_check(ws, "analyst", "admin")
    admin = key_check(ws, "admin")

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except IdentityError as e:
            raise HTTPException(404 if "no customer" in str(e) else 400, {"code": "identity", "message": str(e)}) from e
        except (ModelError, ConfigError, TypeError) as e:
            raise HTTPException(400, {"code": "analytics", "message": str(e)}) from e
        except ValidationError as e:
            problems = [f"{'.'.join(str(x) for x in p['loc'])}: {p['msg']}" for p in e.errors()]
            raise HTTPException(400, {"code": "analytics", "message": "invalid parameters: " + "; ".join(problems)}) from e

    def customer(ref: str) -> dict[str, Any]:
        pid = ws.profiles._id(ref)
        b = ws.backend
        out: dict[str, Any] = {"profile_id": pid}
        for table, key in (("analytics_clv", "clv"), ("analytics_segments", "segment"), ("analytics_features", "features")):
            if b.has_table(table):
                rows = b.rows(f"SELECT * EXCLUDE (profile_id) FROM {table} WHERE profile_id = ?", [pid])
                out[key] = rows[0] if rows else None
        if b.has_table("analytics_scores"):
            out["scores"] = {r["model"]: {"score": r["score"], "drivers": r["drivers"]} for r in b.rows(
                "SELECT model, score, drivers FROM analytics_scores WHERE profile_id = ?", [pid])}
        if b.has_table("analytics_rule_segments"):
            out["rule_segments"] = [r["segment"] for r in b.rows(
                "SELECT segment FROM analytics_rule_segments WHERE profile_id = ? ORDER BY 1", [pid])]
        return out

    @router.get("/customers/{ref}", dependencies=[Depends(read)], summary="CLV, segment, scores of one customer")
    async def get_customer(ref: str) -> dict[str, Any]:
        return await call(customer, ref)

    @router.get("/segments", dependencies=[Depends(read)], summary="Segments, sizes and descriptions (k-anonymous)")
    async def get_segments() -> list[dict[str, Any]]:
        return await call(ws.analytics.segment_summary)

    @router.post("/rule-segments", dependencies=[Depends(admin)], summary="Define a rule-based segment")
    async def post_rule_segment(req: SegmentRequest) -> dict[str, Any]:
        return await call(ws.analytics.rule_segment, req.name, req.condition)

    def rules(kind: str, limit: int) -> list[dict[str, Any]]:
        table = "analytics_rules" if kind == "baskets" else "analytics_sequences"
        if not ws.backend.has_table(table):
            raise ModelError("no rules yet", hint="POST /v1/analytics/rules or run `plait analyze rules`")
        order = "lift DESC" if kind == "baskets" else "lift DESC NULLS LAST"
        return ws.backend.rows(f"SELECT * FROM {table} ORDER BY {order} LIMIT ?", [int(limit)])

    @router.get("/rules", dependencies=[Depends(read)], summary="Top basket or sequential rules")
    async def get_rules(kind: str = "baskets", limit: Annotated[int, Query(ge=0)] = 50) -> list[dict[str, Any]]:
        if kind not in ("baskets", "sequences"):
            raise HTTPException(400, {"code": "analytics", "message": "kind is baskets or sequences"})
        return await call(rules, kind, limit)

    @router.get("/models", dependencies=[Depends(read)], summary="The model registry")
    async def get_models() -> list[dict[str, Any]]:
        return [r.as_dict() for r in await call(ws.models.list)]

    # Each fit's parameters are checked against its signature (names and types) before it runs.
    fits = {name: validate_call(fn) for name, fn in {
        "clv": ws.analytics.clv, "segments": ws.analytics.segments, "rules": ws.analytics.rules,
        "propensity": ws.analytics.propensity, "impute": ws.analytics.impute,
        "attribution": ws.analytics.attribution, "attribution_error": ws.analytics.attribution_error}.items()}

    @router.post("/{analysis}", dependencies=[Depends(admin)], summary="Fit an analysis (clv, segments, rules, "
                 "propensity, impute, attribution, attribution_error) with its parameters")
    async def fit(analysis: str, req: FitRequest) -> dict[str, Any]:
        if analysis not in fits:
            raise HTTPException(404, {"code": "analytics", "message": f"no analysis {analysis!r}; "
                                      f"use one of {', '.join(fits)}"})
        import json

        report = await call(fits[analysis], **req.params)
        return json.loads(json.dumps(report, default=lambda v: v.item() if hasattr(v, "item") else str(v)))

    return router


__all__ = ["analytics_router"]
