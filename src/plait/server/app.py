"""The HTTP application: routers from the packages, assembled in one FastAPI app."""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI

import plait
from plait.analytics.http import analytics_router
from plait.collect.collector import GroupCommitter
from plait.collect.http import Collect, FastCollect, collector_router, document_bodies, imports_router, keys_router
from plait.collect.intake import Intake
from plait.activate import Outbox, Stream, Webhook
from plait.decide.engine import Decider, Recorder, contacts_from_log
from plait.decide.workers import Workers
from plait.decide.triggers import Triggers, observer
from plait.decide.http import Decide, FastDecide, decide_router
from plait.log.http import log_router
from plait.privacy.http import privacy_router
from plait.profiles.http import key_check, profiles_router
from plait.workspace import Workspace


def _load_journal(app: FastAPI) -> None:
    """Load what the fronts' journals hold (with ``--fronts``; the loader is attached after the app is built)."""
    loader = getattr(app.state, "journal_loader", None)
    if loader is not None:
        loader.load()


def create_app(workspace: Workspace, *, fronts: int = 0) -> FastAPI:
    """The FastAPI app serving ``workspace``: the collector, profiles, analytics, privacy and
    real-time decisions. ``fronts``: front processes that will route decisions to the decide
    workers too (see :mod:`plait.server.fronts`)."""
    s = workspace.settings.collector
    committer = GroupCommitter(workspace.log, max_rows=s.max_flush_rows, linger_ms=s.flush_interval_ms)
    intake = Intake(workspace.parser, workspace.keys, s)
    decider = Decider.from_workspace(workspace)
    # The loaded customers are long-lived: out of the garbage collector's sight, its full
    # collections stop pausing decisions for as long as the store is large.
    gc.collect()
    gc.freeze()
    ds = workspace.settings.decide
    workers = None
    if ds.workers:
        # Forked now, before the server's own threads start: each worker owns a share of the customers.
        recorder = decider.record if isinstance(decider.record, Recorder) else None

        def history() -> Any:
            """The contact history from the log, after writing the decisions still queued."""
            if recorder is not None:
                recorder.flush()
            return contacts_from_log(workspace)

        workers = Workers(decider, ds.workers, record=recorder.table if recorder is not None else None,
                          interval_s=ds.record_interval_s, rebuild_contacts=history, fronts=fronts)

    # Triggers: rules with a destination fire on collected events; deliveries go through the outbox.
    outbox = Outbox(workspace, {n: (Stream(n, d.subject or n, servers=d.url, stream=d.stream, timeout_s=d.timeout_s)
                                    if d.type == "nats" else Webhook(n, d.url, headers=d.headers, timeout_s=d.timeout_s))
                                for n, d in ds.destinations.items()}, max_attempts=ds.max_delivery_attempts)
    triggers = Triggers(workers or decider, outbox)
    # Collected consent choices, orders and complaints reach the deciders' snapshots before the 200.
    workspace.log.follow(observer(workers or decider))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if workers is not None:
            workers.attach(asyncio.get_running_loop())
        committer.start()
        outbox.start()
        triggers.attach(workspace.log)
        try:
            yield
        finally:
            triggers.close()
            outbox.stop()
            if workers is not None:
                workers.close()          # their last decisions reach the recorder
            decider.close()          # writes its last decisions
            committer.stop()
            workspace.backend.checkpoint()

    app = FastAPI(
        title="Plait",
        version=plait.__version__,
        description="Omnichannel customer data and real-time decisions. The collector speaks Segment's HTTP tracking API.",
        lifespan=lifespan,
    )
    app.state.workspace = workspace
    app.state.committer = committer
    collect = Collect(intake, committer)
    app.include_router(collector_router(collect))
    app.include_router(imports_router(workspace, key_check(workspace, "admin")))
    app.include_router(keys_router(workspace, key_check(workspace, "admin")))
    app.include_router(log_router(workspace, key_check(workspace, "analyst", "admin"), key_check(workspace, "admin")))
    app.include_router(analytics_router(workspace))
    decide = Decide(decider, workspace, workers)
    app.include_router(profiles_router(workspace, pending=lambda: _load_journal(app), rebuilt=decide.reload_profiles))
    app.include_router(decide_router(decide, key_check(workspace, "analyst", "admin"), key_check(workspace, "admin")))
    app.include_router(privacy_router(workspace, key_check(workspace, "analyst", "admin"),
                                      key_check(workspace, "collector", "admin"), key_check(workspace, "admin"),
                                      pending=lambda: _load_journal(app), rebuilt=decide.reload_profiles))
    document_bodies(app)
    # Consent choices arriving through the collector reach the ledger as they are appended.
    _ = workspace.consent
    # Collected events are assigned to customers as they are appended (real-time stitching).
    if workspace.settings.identity.realtime:
        workspace.identity.follow()
    # Outside Starlette's middleware stack: the hot route pays for nothing it does not use.
    app.middleware_stack = FastDecide(FastCollect(app.build_middleware_stack(), collect), decide)
    app.state.decider = decider
    app.state.workers = workers
    return app
