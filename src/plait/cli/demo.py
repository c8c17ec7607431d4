"""``plait demo``: the product's front door, on the simulator's world, in under a minute."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table


def run(out: Console, workspace: Path | None, *, people: int = 1500, days: int = 60) -> None:
    import plait
    from plait.collect.intake import Intake

    t0 = time.perf_counter()
    path = Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="plait-demo-"))
    with plait.connect(path) as ws:
        out.print(Panel.fit(f"Plait demo — workspace [bold]{ws.path}[/]", style="cyan"))
        out.print(f"[bold]1. Simulate[/] a retailer with {people:,} people over {days} days (web, app, stores, "
                  "call center, email/SMS/push, social, search, display, geofences)…")
        result = ws.simulate(people=people, days=days, seed=7, progress=True)
        out.print("   " + result.summary().replace("\n", "\n   "))

        out.print("[bold]2. Collect[/] through the Segment-compatible API (a batch with one bad event):")
        key = ws.keys.create("demo-web")
        intake = Intake(ws.parser, ws.keys, ws.settings.collector)
        body = (b'{"writeKey":"' + key.encode() + b'","batch":['
                b'{"type":"track","event":"Order Completed","userId":"web-1","messageId":"demo-1",'
                b'"properties":{"order_id":"demo-o1","total":49.9,"currency":"EUR","store_id":"st-2"}},'
                b'{"type":"track","event":"Store Visit","userId":"web-1","messageId":"demo-2"}]}')
        parsed = intake.parse("batch", body, auth=None, encoding=None, received_at=_now())
        ws.log.reject(parsed.rejections)
        r = ws.log.append(parsed.records)
        again = ws.log.append(parsed.records)
        out.print(f"   accepted {r.inserted}, rejected {len(parsed.rejections)} → dead letter: "
                  f"[yellow]{parsed.errors[0]}[/]" if parsed.errors else "")
        out.print(f"   replaying the same batch added {again.inserted} events (idempotent by messageId)")
        ws.fx.add([(_date("2025-01-01"), "EUR", 1.08)])
        out.print(f"   the EUR order is {ws.fx.convert(49.9, 'EUR', _date('2025-03-01')):.2f} "
                  f"{ws.settings.base_currency} in the base currency")

        out.print("[bold]3. The log[/]")
        s = ws.log.stats()
        t = Table(show_edge=False, title=f"{s['events']:,} events · {s['senders']:,} senders · {s['rejected']} rejected")
        t.add_column("channel")
        t.add_column("events", justify="right")
        t.add_column("share", justify="right")
        for ch, n in s["by_channel"].items():
            t.add_row(ch, f"{n:,}", f"{n / s['events']:.0%}")
        out.print(t)
        rows = ws.backend.rows(
            "SELECT channel, count(*) AS orders, round(sum(amount), 0) AS revenue, round(avg(amount), 2) AS basket "
            "FROM events WHERE event = 'Order Completed' GROUP BY 1 ORDER BY 3 DESC")
        t = Table(show_edge=False, title="orders by channel")
        for c in ("channel", "orders", "revenue", "avg basket"):
            t.add_column(c, justify="right" if c != "channel" else "left")
        for row in rows:
            t.add_row(row["channel"], f"{row['orders']:,}", f"{row['revenue']:,.0f}", f"{row['basket']:.2f}")
        out.print(t)
        ret = ws.backend.scalar("SELECT count(*) FROM events WHERE event IN ('Product Returned', 'Order Cancelled')")
        out.print(f"   returns and cancellations are new facts, never edits: {ret:,} of them")
        sealed = ws.backend.scalar("SELECT count(*) FROM events WHERE pii IS NOT NULL")
        out.print(f"   {sealed:,} events carry personal fields, sealed with AES-GCM under {ws.vault.count():,} "
                  "per-identifier keys (erasable by destroying keys)")
        out.print(f"   ground truth: {', '.join(sorted(p.name for p in ws.truth_dir.glob('*.parquet')))}")
    out.print(f"[green]done in {time.perf_counter() - t0:.1f} s[/] — next: `plait --workspace {path} serve`, "
              f"`plait --workspace {path} events -n 5`")


def _now() -> int:
    return time.time_ns() // 1000


def _date(s: str):  # noqa: ANN202
    from datetime import date

    return date.fromisoformat(s)
