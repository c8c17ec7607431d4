"""``plait``: one command per stage, calling only the public Python API.

Every command takes ``--workspace DIR`` (or ``PLAIT_WORKSPACE``). Errors print what
went wrong and what to do, and exit with status 1 — never a bare traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from plait.errors import ConfigError, PlaitError

app = typer.Typer(
    name="plait",
    help="Plait: every channel a retailer has, braided into one customer.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
keys_app = typer.Typer(help="Write keys for sources sending events.", no_args_is_help=True)
log_app = typer.Typer(help="The event log: Parquet export and import, dead letters, schemas.", no_args_is_help=True)
fx_app = typer.Typer(help="Exchange rates to the workspace's base currency.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(log_app, name="log")
app.add_typer(fx_app, name="fx")
profiles_app = typer.Typer(help="Customers: golden record, features, timeline, splits.", no_args_is_help=True)
export_app = typer.Typer(help="Export derived data (identities).", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")
app.add_typer(export_app, name="export")
ledger_app = typer.Typer(help="The signed, tamper-evident ledger: append, prove, verify.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
consent_app = typer.Typer(help="Consent per purpose and channel: record choices, read the state.", no_args_is_help=True)
app.add_typer(consent_app, name="consent")
privacy_app = typer.Typer(help="Subject rights: access export and erasure.", no_args_is_help=True)
app.add_typer(privacy_app, name="privacy")
share_app = typer.Typer(help="Clean-room audience matching with partners on keyed hashes.", no_args_is_help=True)
app.add_typer(share_app, name="share")
analyze_app = typer.Typer(help="Learn from the customers: CLV, rules, segments, propensities.", no_args_is_help=True)
app.add_typer(analyze_app, name="analyze")
catalogue_app = typer.Typer(help="The product catalogue (category, department, list price).", no_args_is_help=True)
app.add_typer(catalogue_app, name="catalogue")
rules_app = typer.Typer(help="Decision rules and offers: start from the lifecycle pack, check files.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")

out = Console()
err = Console(stderr=True)


class _State:
    workspace: Optional[Path] = None


state = _State()

WorkspaceOpt = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", envvar="PLAIT_WORKSPACE", help="Workspace directory (default ./plait-workspace).",
                 show_default=False),
]
ServerOpt = Annotated[Optional[str], typer.Option(
    help="Ask a running `plait serve` (URL) instead of opening the workspace (which it holds).")]
KeyOpt = Annotated[Optional[str], typer.Option(envvar="PLAIT_KEY", help="The key for --server (analyst or admin).")]


@app.callback()
def _root(workspace: WorkspaceOpt = None) -> None:
    state.workspace = workspace


def _ws(workspace: Optional[Path]):  # noqa: ANN202
    import plait

    return plait.connect(workspace or state.workspace)


def main() -> None:
    try:
        app()
    except PlaitError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(1)


# -- workspace -----------------------------------------------------------------------
@app.command()
def init(
    workspace: WorkspaceOpt = None,
    base_currency: Annotated[str, typer.Option(help="ISO code all amounts are converted to.")] = "USD",
) -> None:
    """Create a workspace with default settings.

    Example: [bold]plait --workspace shop init --base-currency EUR[/]
    """
    from plait.config import Settings

    path = Path(workspace or state.workspace or "plait-workspace")
    path.mkdir(parents=True, exist_ok=True)
    settings = Settings.load(path)
    settings.base_currency = base_currency.upper()
    settings.save(path)
    with _ws(path) as ws:
        out.print(f"workspace ready at [bold]{ws.path}[/] (base currency {ws.settings.base_currency})")


@app.command()
def stats(
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """What is in the log: events, rejected inputs, channels, sources.

    Example: [bold]plait stats --json[/] · [bold]plait stats --server http://127.0.0.1:8080 --key $KEY[/]
    """
    if server is not None:
        s = _remote(server, key, "/v1/stats", [], what="stats")
    else:
        with _ws(workspace) as ws:
            s = ws.log.stats()
            s["unconverted_amounts"] = ws.fx.unconverted()
    if as_json:
        print(json.dumps(s, default=str))
        return
    _print_stats(s)


def _print_stats(s: dict) -> None:
    out.print(f"[bold]{s['events']:,}[/] events from {s['senders']:,} senders over {s['days']} days "
              f"({s['first_event'] or '-'} → {s['last_event'] or '-'}); [bold]{s['rejected']:,}[/] rejected")
    if s.get("parts"):
        out.print(f"{s['part_events']:,} of them in {s['parts']} Parquet part file(s) of bulk imports (WORKSPACE/log/)")
    for title, key in (("channel", "by_channel"), ("type", "by_type"), ("event", "top_events"), ("source", "by_source")):
        t = Table(title=f"by {title}", show_edge=False)
        t.add_column(title)
        t.add_column("events", justify="right")
        for k, v in s[key].items():
            t.add_row(str(k), f"{v:,}")
        out.print(t)


@app.command()
def events(
    workspace: WorkspaceOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many (newest first).")] = 20,
    event: Annotated[Optional[str], typer.Option(help="Only this event name.")] = None,
    type: Annotated[Optional[str], typer.Option("--type", help="Only this call type.")] = None,
    channel: Annotated[Optional[str], typer.Option(help="Only this channel.")] = None,
    source: Annotated[Optional[str], typer.Option(help="Only this source.")] = None,
    user: Annotated[Optional[str], typer.Option("--user", help="Only this userId.")] = None,
    since: Annotated[Optional[str], typer.Option(help="Event time from (ISO).")] = None,
    until: Annotated[Optional[str], typer.Option(help="Event time before (ISO).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event per line, personal fields included.")] = False,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """Tail and filter the log.

    Example: [bold]plait events --channel store --event "Order Completed" -n 5[/] ·
    [bold]plait events --server http://127.0.0.1:8080 --key $KEY[/] (the workspace is being served;
    --json there needs an admin key)
    """
    filters = {"event": event, "type": type, "channel": channel, "source": source, "since": since, "until": until}
    if server is not None:
        query = [("limit", str(limit)), ("personal", str(as_json).lower()), *((k, v) for k, v in filters.items() if v),
                 *((("user", user),) if user else ())]
        rows = _remote(server, key, "/v1/events", query, what="events")
        if as_json:
            for r in rows:
                print(json.dumps(r))
            return
    else:
        with _ws(workspace) as ws:
            rows = ws.log.events(limit=limit, user_id=user, **filters).to_pylist()
            if as_json:
                for r in rows:
                    print(json.dumps(ws.log.reveal(r), default=str))
                return
    t = Table(show_edge=False)
    for c in ("event_time", "type", "event", "channel", "source", "user_id", "anonymous_id", "amount", "currency"):
        t.add_column(c)
    for r in rows:
        t.add_row(str(r["event_time"])[:19], r["type"], r["event"] or "", r["channel"], r["source"],
                  r["user_id"] or "", r["anonymous_id"] or "",
                  "" if r["amount"] is None else f"{r['amount']:.2f}", r["currency"] or "")
    out.print(t)


# -- collection ----------------------------------------------------------------------
@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="JSONL (Segment events; .jsonl.gz too), CSV (.csv.gz too) or Parquet files.", exists=True, dir_okay=False)],
    workspace: WorkspaceOpt = None,
    source: Annotated[Optional[str], typer.Option(help="Source name stamped on the events (default: import:FILE).")] = None,
    map: Annotated[Optional[list[str]], typer.Option("--map", help="TARGET=COLUMN for CSV/Parquet, e.g. user_id=customer.")] = None,
    set: Annotated[Optional[list[str]], typer.Option("--set", help="TARGET=VALUE constant, e.g. event='Order Completed'.")] = None,
    only_mapped: Annotated[bool, typer.Option(help="Drop unmapped columns instead of keeping them as properties.")] = False,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """Bulk-import events; resumable, and re-running adds no duplicates.

    Example: [bold]plait ingest events.jsonl[/] ·
    [bold]plait ingest pos.parquet --map user_id=card --map timestamp=ts --set event="Order Completed"[/] ·
    [bold]plait ingest pos.parquet --server http://127.0.0.1:8080 --key $ADMIN_KEY[/] (the workspace is being served)
    """
    from plait.collect.bulk import parse_mapping

    if server is not None:
        parse_mapping(map or [], set or [])             # a bad mapping fails here, before any upload
        for f in files:
            query = [("filename", f.name), *(("map", m) for m in map or []), *(("set", s) for s in set or []),
                     ("only_mapped", str(only_mapped).lower()), *((("source", source),) if source else ())]
            r = _remote(server, key, "/v1/imports", query, what=f"{f}: the import", upload=f)
            if r["skipped"] and not r["rows"]:
                out.print(f"{f}: already imported ({r['skipped']:,} rows, same content) — nothing to do")
            else:
                out.print(f"{f}: [bold]{r['inserted']:,}[/] new events, {r['duplicates']:,} already in the log, "
                          f"{r['rejected']:,} rejected, in {r['seconds']:.1f} s on the server")
        return
    with _ws(workspace) as ws:
        for f in files:
            mapping = parse_mapping(map or [], set or [])
            report = ws.importer.file(f, source=source, mapping=mapping, only_mapped=only_mapped, progress=True)
            _print_report(report)
            if report.rejected:
                err.print(f"[yellow]{report.rejected:,} invalid rows kept in the dead-letter table[/] "
                          "(see `plait log rejected`)")


def _remote(server: str, key: str | None, path: str, query: list[tuple[str, str]] | None = None, *, what: str,
            method: str = "GET", body: dict | None = None, upload: Path | None = None) -> Any:
    """Call a running ``plait serve`` (the CLI cannot open a served workspace): ``method`` on
    ``path`` with a JSON ``body``, or POST ``upload`` streamed from disk; the JSON answer, or a
    :class:`PlaitError` saying why not."""
    import base64
    import contextlib
    import urllib.error
    import urllib.parse
    import urllib.request

    url = server.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()} if key else {}
    try:
        with contextlib.ExitStack() as stack:
            data: Any = None
            if upload is not None:
                method, data = "POST", stack.enter_context(upload.open("rb"))
                headers |= {"Content-Type": "application/octet-stream", "Content-Length": str(upload.stat().st_size)}
            elif body is not None:
                data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            with urllib.request.urlopen(req, timeout=3600) as resp:
                return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        try:
            detail = json.loads(e.read()).get("detail", {})
        except ValueError:
            detail = {}
        msg = detail.get("message", str(detail)) if isinstance(detail, dict) else str(detail)
        raise PlaitError(f"{what}: the server refused ({e.code}): {msg or e.reason}",
                         hint=(detail.get("hint") if isinstance(detail, dict) else "") or
                         ("give a key with --key or PLAIT_KEY (an admin key to import or see personal fields)"
                          if e.code in (401, 403) else "")) from None
    except (urllib.error.URLError, OSError) as e:
        raise PlaitError(f"cannot reach {server}: {getattr(e, 'reason', e)}",
                         hint="is `plait serve` running there? give its URL, e.g. http://127.0.0.1:8080") from None



def _print_report(r) -> None:  # noqa: ANN001
    if r.skipped and not r.rows:
        out.print(f"{r.path}: already imported ({r.skipped:,} rows, same content) — nothing to do")
        return
    resumed = f", resumed after row {r.skipped:,}" if r.skipped else ""
    out.print(f"{r.path}: [bold]{r.inserted:,}[/] new events, {r.duplicates:,} already in the log, "
              f"{r.rejected:,} rejected ({r.rate:,.0f} rows/s{resumed})")


@app.command("import")
def import_(
    dataset: Annotated[str, typer.Argument(help="uci-online-retail | hm | complete-journey")],
    path: Annotated[Optional[Path], typer.Argument(help="The dataset's file or folder (not needed for complete-journey).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Import a public retail dataset as events.

    Example: [bold]plait import uci-online-retail ../shared/data/online-retail-uci-head/online_retail_sample.csv[/]
    """
    from plait.collect import sources

    with _ws(workspace) as ws:
        report = sources.load(ws, dataset, path, progress=True)
        _print_report(report)


@app.command()
def serve(
    workspace: WorkspaceOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    decide_workers: Annotated[Optional[int], typer.Option(
        min=0, max=31, help="Processes that decide, each owning a share of the customers (default: decide.workers).")] = None,
    fronts: Annotated[Optional[int], typer.Option(
        min=0, max=16, help="Processes answering HTTP in front of the one that writes the workspace (default: server.fronts).")] = None,
) -> None:
    """Serve the collector (Segment HTTP API), profiles, analytics, privacy and decisions, with
    the OpenAPI docs at /docs.

    Example: [bold]plait serve --host 0.0.0.0 --port 8080 --fronts 1 --decide-workers 2[/]
    """
    import uvicorn

    from plait.server import create_app
    from plait.server.fronts import listen
    from plait.server.fronts import serve as serve_split

    ws = _ws(workspace)
    if decide_workers is not None:
        ws.settings.decide.workers = decide_workers
    if fronts is not None:
        ws.settings.server.fronts = fronts
    n = ws.settings.server.fronts
    try:
        if n:
            err.print(f"serving workspace {ws.path} on http://{host}:{port} (docs at /docs) "
                      f"with {n} front process{'es' if n > 1 else ''}")
            serve_split(ws, host=host, port=port, fronts=n, log_level=log_level)
        else:
            sock = listen(host, port)[0]               # (a port in use: a clear error, before anything starts)
            err.print(f"serving workspace {ws.path} on http://{host}:{sock.getsockname()[1]} (docs at /docs)")
            config = uvicorn.Config(create_app(ws), log_level=log_level, access_log=False)
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        ws.close()


@app.command()
def simulate(
    workspace: WorkspaceOpt = None,
    people: Annotated[int, typer.Option(help="How many people live in the world.")] = 2000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 90,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same world.")] = 7,
    start: Annotated[str, typer.Option(help="First day (ISO date).")] = "2025-01-01",
) -> None:
    """Simulate an omnichannel retailer into the log, with the ground truth beside it.

    Example: [bold]plait simulate --people 100000 --days 365 --seed 1[/]
    """
    from datetime import date

    try:
        first = date.fromisoformat(start)
    except ValueError:
        raise ConfigError(f"--start {start!r} is not a date", hint="give an ISO date such as 2025-01-01") from None
    with _ws(workspace) as ws:
        result = ws.simulate(people=people, days=days, seed=seed, start=first, progress=True)
        out.print(result.summary())


@app.command()
def demo(
    workspace: WorkspaceOpt = None,
    people: Annotated[int, typer.Option(help="People in the demo world.")] = 5000,
    days: Annotated[int, typer.Option(help="Days of history.")] = 180,
) -> None:
    """Simulate a small retailer, ingest it and show what is in the log (under a minute).

    Example: [bold]plait demo[/]
    """
    from plait.cli.demo import run

    run(out, workspace or state.workspace, people=people, days=days)


# -- identity and profiles -------------------------------------------------------------
@app.command()
def resolve(
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
    evaluate: Annotated[bool, typer.Option(help="Score against the simulator's ground truth when the workspace has one.")] = False,
    server: ServerOpt = None,
    admin_key: Annotated[Optional[str], typer.Option("--key", envvar="PLAIT_KEY", help="An admin key for --server.")] = None,
) -> None:
    """Resolve identity over the whole log (stitching + probabilistic matching), then rebuild profiles.

    Example: [bold]plait resolve --evaluate[/] · [bold]plait resolve --server http://127.0.0.1:8080 --key $ADMIN_KEY[/]
    (a served workspace; its decisions then use the rebuilt profiles)
    """
    from plait.identity.resolver import ResolveReport
    from plait.profiles.store import BuildReport

    if server is not None:
        if evaluate:
            raise PlaitError("--evaluate reads the workspace's truth files", hint="run it without --server")
        result = _remote(server, admin_key, "/v1/profiles/resolve", what="resolving", method="POST", body={})
        ident, prof = ResolveReport(**result["identity"]), BuildReport(**result["profiles"])
    else:
        with _ws(workspace) as ws:
            ident, prof = ws.resolve()
            result = {"identity": ident.as_dict(), "profiles": prof.__dict__}
            if evaluate and (ws.truth_dir / "identifiers.parquet").exists():
                from plait.identity.quality import score

                result["accuracy"] = score(ws)
    if as_json:
        out.print_json(json.dumps(result, default=str))
        return
    out.print(ident.summary())
    out.print(prof.summary())
    if "accuracy" in result:
        for name, sc in result["accuracy"].items():
            out.print(f"  {name}: precision {sc['precision']:.4f} recall {sc['recall']:.4f} "
                      f"F1 {sc['f1']:.4f} purity {sc['purity']:.4f} over {sc['identifiers']:,} identifiers")


@profiles_app.command("show")
def profiles_show(
    ref: Annotated[str, typer.Argument(help="A profile id (prof_…) or an identifier TYPE:VALUE.")],
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """One customer: identifiers, golden traits with source and confidence, features, links.

    Example: [bold]plait profiles show email:ann@example.com[/]
    """
    if server is not None:
        from urllib.parse import quote

        p = _remote(server, key, f"/v1/profiles/{quote(ref, safe='')}", what=ref)
    else:
        with _ws(workspace) as ws:
            p = ws.profiles.get(ref)
    if as_json:
        out.print_json(json.dumps(p, default=str))
        return
    out.print(f"[bold]{p['profile_id']}[/]")
    t = Table(title="identifiers", show_edge=False)
    for c in ("type", "value", "first seen"):
        t.add_column(c)
    for i in p["identifiers"]:
        t.add_row(i["identifier_type"], i["identifier_value"], str(i["first_seen"])[:19])
    out.print(t)
    t = Table(title="golden traits", show_edge=False)
    for c in ("trait", "value", "source", "confidence", "seen", "support", "others"):
        t.add_column(c)
    for name, tr in p["traits"].items():
        t.add_row(name, json.dumps(tr["value"])[:60], str(tr["source"]), tr["confidence"], str(tr["observed_at"])[:10],
                  str(tr["support"]), str(tr["alternatives"]))
    out.print(t)
    f = p["features"]
    if f:
        out.print("features: " + ", ".join(f"{k}={v}" for k, v in f.items() if v not in (None, 0, 0.0, [])))
    for link in p["links"]:
        why = link["reason"] + (f" p={link['probability']:.4f}" if link["probability"] is not None else "")
        out.print(f"  link {link['a']} — {link['b']}: {why}")
    for c in p["refused"]:
        out.print(f"  [yellow]refused[/] {c['a']} — {c['b']}: {c['reason']}")


@profiles_app.command("timeline")
def profiles_timeline(
    ref: Annotated[str, typer.Argument(help="A profile id or TYPE:VALUE.")],
    workspace: WorkspaceOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n")] = 30,
    server: ServerOpt = None,
    key: KeyOpt = None,
) -> None:
    """The customer's events across every channel, newest first.

    Example: [bold]plait profiles timeline loyalty_card:LC40000003 -n 10[/]
    """
    if server is not None:
        from urllib.parse import quote

        rows = _remote(server, key, f"/v1/profiles/{quote(ref, safe='')}/timeline", [("limit", str(limit))],
                       what=ref)["events"]
    else:
        with _ws(workspace) as ws:
            rows = ws.profiles.timeline(ref, limit=limit)
    t = Table(show_edge=False)
    for c in ("time", "event", "channel", "source", "amount", "via"):
        t.add_column(c)
    for r in rows:
        t.add_row(str(r["event_time"])[:19], r["event"], r["channel"], r["source"] or "",
                  "" if r["amount"] is None else f"{r['amount']:.2f} {r['currency']}", r["subject"])
    out.print(t)


@profiles_app.command("split")
def profiles_split(
    ref: Annotated[str, typer.Argument(help="The profile to split (id or TYPE:VALUE).")],
    identifier: Annotated[list[str], typer.Option("--identifier", "-i", help="TYPE:VALUE to separate (repeatable).")],
    reason: Annotated[str, typer.Option(help="Why (kept with the split).")] = "split by request",
    workspace: WorkspaceOpt = None,
) -> None:
    """Unmerge: separate identifiers from a customer for good, then re-derive identity.

    Example: [bold]plait profiles split prof_1a2b… -i anonymous_id:kiosk-7 --reason "shared kiosk"[/]
    """
    with _ws(workspace) as ws:
        pid = ws.identity.resolve_ref(ref) or ref
        result = ws.identity.split(pid, identifier, reason=reason)
        ws.profiles.build()
    out.print(f"split #{result['split_id']} recorded; identity v{result['version']}: now {', '.join(result['profiles'])}")


@profiles_app.command("as-of")
def profiles_as_of(
    identifier: Annotated[str, typer.Argument(help="TYPE:VALUE.")],
    when: Annotated[str, typer.Argument(help="ISO date or time, e.g. 2025-06-01.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Who an identifier was as of a moment: its customer then and the identifiers it held.

    Example: [bold]plait profiles as-of anonymous_id:ck-12-0 2025-02-01[/]
    """
    with _ws(workspace) as ws:
        r = ws.identity.as_of(identifier, when)
    if r is None:
        out.print(f"{identifier} was not known by {when}")
        return
    out.print(f"as of {r['as_of']}: {r['profile_id']} holding {', '.join(r['identifiers'])}")


@export_app.command("identities")
def export_identities(
    workspace: WorkspaceOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File (default: standard output).")] = None,
    pseudonymise: Annotated[bool, typer.Option(help="Replace identifier values by salted HMACs.")] = False,
) -> None:
    """One row per identifier: identifier_type,identifier_value,profile_id (customers allowing analytics).

    Example: [bold]plait export identities --format csv -o identities.csv[/]
    """
    if fmt not in ("csv", "parquet"):
        raise PlaitError(f"unknown format {fmt!r}", hint="use --format csv or --format parquet")
    with _ws(workspace) as ws:
        # An export is analytics use: customers who withdrew it are left out (the consent check).
        table = ws.identity.export(purpose="analytics")
        if pseudonymise:
            from plait.privacy.sharing import pseudonymise_column

            table = pseudonymise_column(table, "identifier_value", ws.vault.secret("export-pseudonym-salt"))
    _write_table(table, fmt, output, "identifiers")


@export_app.command("aggregate")
def export_aggregate(
    by: Annotated[list[str], typer.Option("--by", help="Feature column or golden trait to group by (repeatable).")],
    workspace: WorkspaceOpt = None,
    purpose: Annotated[str, typer.Option(help="The consent purpose this use falls under.")] = "analytics",
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File (default: standard output).")] = None,
) -> None:
    """Customers, orders and revenue per group; groups under the minimum size are suppressed.

    Example: [bold]plait export aggregate --by city --by favourite_category[/]
    """
    from plait.privacy.groups import aggregate

    with _ws(workspace) as ws:
        table = aggregate(ws, by, purpose=purpose)
    _write_table(table, fmt, output, "groups")


def _write_table(table, fmt: str, output: Optional[Path], what: str) -> None:  # noqa: ANN001
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt not in ("csv", "parquet"):
        raise PlaitError(f"unknown format {fmt!r}", hint="use --format csv or --format parquet")
    if fmt == "parquet":
        if output is None:
            raise PlaitError("Parquet needs a file", hint="add --output FILE.parquet")
        pq.write_table(table, output)
    elif output is None:
        import io

        buf = io.BytesIO()
        pacsv.write_csv(table, buf, pacsv.WriteOptions(quoting_style="needed"))
        sys.stdout.write(buf.getvalue().decode())
    else:
        pacsv.write_csv(table, output, pacsv.WriteOptions(quoting_style="needed"))
    if output is not None:
        err.print(f"{table.num_rows:,} {what} written to {output}")


# -- analytics -----------------------------------------------------------------------
def _report(out_json: bool, report: dict, lines: list[str]) -> None:
    if out_json:
        sys.stdout.write(json.dumps(report, default=_jsonable) + "\n")
        return
    for line in lines:
        out.print(line)


def _jsonable(v):  # noqa: ANN001, ANN202
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (tuple, set)):
        return list(v)
    return str(v)


@analyze_app.command("clv")
def analyze_clv(
    workspace: WorkspaceOpt = None,
    model: Annotated[str, typer.Option(help="bgnbd or pareto.")] = "bgnbd",
    horizon_days: Annotated[float, typer.Option(help="CLV horizon in days.")] = 365,
    discount_rate: Annotated[float, typer.Option(help="Yearly discount rate.")] = 0.1,
    calibration_end: Annotated[Optional[str], typer.Option(help="Fit up to this date; report the holdout after it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Fit BG/NBD (or Pareto/NBD) with Gamma-Gamma spend; store analytics_clv per customer.

    Example: [bold]plait analyze clv --calibration-end 2025-05-01[/]
    """
    with _ws(workspace) as ws:
        r = ws.analytics.clv(model=model, horizon_days=horizon_days, discount_rate=discount_rate,
                             calibration_end=calibration_end)
    p = ", ".join(f"{k}={v:.4g}" for k, v in r["params"].items())
    lines = [f"{r['model']}: {p} (log-likelihood {r['log_likelihood']:,.1f}); spend "
             + ", ".join(f"{k}={v:.4g}" for k, v in r["spend_params"].items()),
             f"{r['customers']:,} customers ({r['repeat_buyers']:,} repeat buyers): {r['horizon_days']:.0f}-day CLV "
             f"{r['total_clv']:,.0f}, top decile holds {r['top_decile_share']:.0%}; stored in analytics_clv"]
    if "holdout" in r:
        h = r["holdout"]
        lines.append(f"holdout ({h['horizon']:.0f} days): predicted {h['predicted_total']:,.0f} purchases, actual "
                     f"{h['actual_total']:,.0f}; per-customer MAE {h['mae']:.2f}, correlation {h['correlation']:.2f}")
    _report(as_json, r, lines)


@analyze_app.command("rules")
def analyze_rules(
    workspace: WorkspaceOpt = None,
    level: Annotated[str, typer.Option(help="product, category or department.")] = "category",
    min_support: Annotated[float, typer.Option(help="Minimum share of baskets.")] = 0.01,
    min_confidence: Annotated[float, typer.Option(help="Minimum confidence.")] = 0.2,
    multilevel: Annotated[bool, typer.Option(help="Mix levels via the catalogue's hierarchy.")] = False,
    within_days: Annotated[float, typer.Option(help="Window of sequential rules.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Basket rules (analytics_rules) and sequential rules "B within N days after A" (analytics_sequences).

    Example: [bold]plait analyze rules --level product --min-support 0.002 --min-confidence 0.3[/]
    """
    with _ws(workspace) as ws:
        r = ws.analytics.rules(level=level, min_support=min_support, min_confidence=min_confidence,
                               multilevel=multilevel, within_days=within_days)
    lines = [f"{r['baskets']:,} baskets → {r['itemsets']:,} frequent itemsets, {r['rules']:,} rules, "
             f"{r['sequences']:,} sequential rules in {r['seconds']:.1f} s"]
    for x in r["top"]:
        lines.append(f"  {', '.join(map(str, x['antecedents']))} ⇒ {', '.join(map(str, x['consequents']))}  "
                     f"support {x['support']:.4f} confidence {x['confidence']:.2f} lift {x['lift']:.1f}")
    for x in r["top_sequences"]:
        lines.append(f"  {x['antecedent']} then {x['consequent']} within {within_days:g} days: "
                     f"{x['probability']:.0%} of {x['customers']:,} (lift {x['lift']:.1f})")
    _report(as_json, r, lines)


@analyze_app.command("segments")
def analyze_segments(
    workspace: WorkspaceOpt = None,
    k_min: Annotated[int, typer.Option(help="Fewest segments to try.")] = 2,
    k_max: Annotated[int, typer.Option(help="Most segments to try.")] = 8,
    method: Annotated[str, typer.Option(help="kmeans (silhouette) or gmm (BIC).")] = "kmeans",
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same segments).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Cluster customers on behaviour; store analytics_segments with a description of each.

    Example: [bold]plait analyze segments --k-max 6[/]
    """
    with _ws(workspace) as ws:
        r = ws.analytics.segments(k_min=k_min, k_max=k_max, method=method, seed=seed)
    lines = [f"{r['k']} segments of {r['customers']:,} customers (chosen by {'silhouette' if method == 'kmeans' else 'BIC'})"]
    for s in r["segments"]:
        size = "suppressed (small group)" if s["suppressed"] else f"{s['customers']:,} ({s['share']:.0%})"
        lines.append(f"  {s['segment']}: {s['description']} — {size}")
    _report(as_json, r, lines)


@analyze_app.command("propensity")
def analyze_propensity(
    target: Annotated[str, typer.Argument(help="category:<name>, churn, return, coupon or line_return.")],
    workspace: WorkspaceOpt = None,
    horizon_days: Annotated[int, typer.Option(help="Predict the next N days.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Gradient-boosted propensity, validated out of time; scores and drivers to analytics_scores.

    Example: [bold]plait analyze propensity category:Dairy --horizon-days 30[/]
    """
    with _ws(workspace) as ws:
        r = ws.analytics.propensity(target, horizon_days=horizon_days)
    lines = [f"{target} in the next {horizon_days} days: AUC {r['auc']:.3f}, lift at 10% {r['lift_at_10']:.1f}× "
             f"(base rate {r['base_rate']:.1%}, tested on the latest window); "
             + (f"{r['customers']:,} customers scored, " if "customers" in r else f"{r['test_rows']:,} lines tested, ")
             + f"model version {r['version']}",
             "drivers: " + ", ".join(f"{n} ({v:+.3f} AUC)" for n, v in r["drivers"])]
    _report(as_json, r, lines)


@analyze_app.command("discounts")
def analyze_discounts(workspace: WorkspaceOpt = None,
                      as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False) -> None:
    """The discount level at which each customer buys (analytics_discount)."""
    with _ws(workspace) as ws:
        r = ws.analytics.discount_levels()
    _report(as_json, r, [f"{r['customers']:,} customers: " + ", ".join(f"{k} {v:,}" for k, v in r["levels"].items())
                         + f"; {r['mean_promo_share']:.0%} of lines bought on promotion on average, typical depth "
                           f"{r['typical_depth']:.0%}"])


@analyze_app.command("impute")
def analyze_impute(
    trait: Annotated[str, typer.Argument(help="age_band, home_store, preferred_channel or any golden trait.")],
    workspace: WorkspaceOpt = None,
    min_probability: Annotated[float, typer.Option(help="Store only predictions at least this sure.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Predict a missing trait from behaviour; predictions go to inferred_traits, never over facts."""
    with _ws(workspace) as ws:
        r = ws.analytics.impute(trait, min_probability=min_probability)
    lines = [f"{trait}: known for {r['known']:,} customers, missing for {r['missing']:,}; held-out accuracy "
             f"{r['accuracy']:.1%} vs {r['baseline']:.1%} always guessing the commonest; {r['imputed']:,} imputed"
             + (f" — {r['note']}" if r["note"] else "")]
    _report(as_json, r, lines)


@analyze_app.command("o2o")
def analyze_o2o(
    workspace: WorkspaceOpt = None,
    within_days: Annotated[float, typer.Option(help="Store activity counted up to N days after a touch.")] = 7,
    by: Annotated[str, typer.Option(help="channel or campaign.")] = "channel",
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Online to offline: store visits and store sales after digital touches, vs before them."""
    from plait.analytics.journeys import online_to_offline

    with _ws(workspace) as ws:
        df = online_to_offline(ws, within_days=within_days, by=by)
    _print_frame(df, as_json, f"store activity within {within_days:g} days after vs before a digital touch",
                 money=("store_sales_after", "store_sales_before"))


@analyze_app.command("funnel")
def analyze_funnel(
    workspace: WorkspaceOpt = None,
    by: Annotated[str, typer.Option(help="channel (web/app sessions by entry source) or store.")] = "channel",
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Journey stages: sessions, visit quality, cart, checkout, conversion — per entry channel or store."""
    from plait.analytics.journeys import funnel

    with _ws(workspace) as ws:
        df = funnel(ws, by=by)
    _print_frame(df, as_json, f"journey stages by {by}", money=("revenue", "store_sales", "pages_per_session"))


@analyze_app.command("incrementality")
def analyze_incrementality(
    workspace: WorkspaceOpt = None,
    window_days: Annotated[float, typer.Option(help="Conversions counted up to N days after the assignment.")] = 14,
    conversions: Annotated[str, typer.Option(help="any, store (a campaign's effect on store sales) or online.")] = "any",
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Campaign lift against holdout groups (Campaign Exposure events), with 95 % intervals."""
    from plait.analytics.incrementality import measure

    with _ws(workspace) as ws:
        df = measure(ws, window_days=window_days, conversions=conversions)
    if not as_json:
        df = df.assign(
            treated=df["treated"].astype(int), holdout=df["holdout"].astype(int),
            lift_95=[f"{lo:+.1%} to {hi:+.1%}" for lo, hi in zip(df["lift_low"], df["lift_high"])],
            incremental_orders=[f"{x:+,.0f} [{lo:+,.0f}, {hi:+,.0f}]" for x, lo, hi in
                                zip(df["incremental_conversions"], df["incremental_low"], df["incremental_high"])],
        )[["campaign_id", "channel", "treated", "holdout", "rate_treated", "rate_holdout", "lift_95",
           "incremental_orders"]].rename(columns={"campaign_id": "campaign", "rate_treated": "buy_t",
                                                  "rate_holdout": "buy_h"})
    _print_frame(df, as_json, f"lift over holdouts within {window_days:g} days ({conversions} conversions)")


@analyze_app.command("first-touch")
def analyze_first_touch(
    workspace: WorkspaceOpt = None,
    lookback_days: Annotated[float, typer.Option(help="Touches counted up to N days before a conversion.")] = 30,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Journeys per first-touch channel: conversion rate (95 % interval), value and sales cycle in days."""
    from plait.analytics.paths import by_first_touch, first_touches

    with _ws(workspace) as ws:
        df = by_first_touch(first_touches(ws, lookback_days=lookback_days))
    if not as_json:
        df = df.assign(rate_95=[f"{lo:.1%}–{hi:.1%}" for lo, hi in zip(df["rate_low"], df["rate_high"])])[
            ["channel", "journeys", "conversions", "conversion_rate", "rate_95", "value", "median_days", "p90_days"]
        ].rename(columns={"conversions": "conv", "conversion_rate": "rate", "median_days": "days_50",
                          "p90_days": "days_90"})
    _print_frame(df, as_json, "conversion and sales cycle (days from first touch) by first touch",
                 money=("value", "days_50", "days_90"))


def _print_frame(df, as_json: bool, title: str, *, money: tuple[str, ...] = ()) -> None:  # noqa: ANN001
    """A DataFrame as JSON records or a table: shares as percentages, amounts with separators."""
    if as_json:
        sys.stdout.write(df.to_json(orient="records") + "\n")
        return
    t = Table(show_edge=False, title=title)
    for i, c in enumerate(df.columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in df.itertuples(index=False):
        t.add_row(*[f"{v:,.2f}" if c in money else f"{v:.1%}" if isinstance(v, float) else
                    f"{v:,}" if isinstance(v, int) else str(v) for c, v in zip(df.columns, r)])
    out.print(t)


@analyze_app.command("segment")
def analyze_segment(
    name: Annotated[str, typer.Argument(help="Segment name.")],
    condition: Annotated[str, typer.Argument(help='Condition as JSON, e.g. {"field": "features.orders", "op": ">=", '
                                                  '"value": 3}')],
    workspace: WorkspaceOpt = None,
) -> None:
    """Define a rule-based segment by a condition; members go to analytics_rule_segments."""
    try:
        cond = json.loads(condition)
    except json.JSONDecodeError as e:
        raise PlaitError(f"the condition is not JSON: {e}", hint='quote it, e.g. \'{"field": "features.orders", '
                                                                 '"op": ">=", "value": 3}\'') from None
    with _ws(workspace) as ws:
        r = ws.analytics.rule_segment(name, cond)
    out.print(f"segment {name}: {r['customers']:,} customers  [dim]{r['sql']}[/]")


@app.command("attribution")
def attribution(
    model: Annotated[str, typer.Option(help="markov, shapley, or a heuristic: first_touch, last_touch, "
                                            "last_non_direct, linear, time_decay, position_based.")] = "markov",
    order: Annotated[int, typer.Option(help="Markov order (1-4).")] = 1,
    method: Annotated[str, typer.Option(help="Shapley: simplified, exact or ordered.")] = "simplified",
    paths: Annotated[Optional[Path], typer.Option(help="Path table CSV: path, total_conversions, "
                                                       "total_conversion_value, total_null.")] = None,
    lookback_days: Annotated[float, typer.Option(help="Touches counted up to N days before a conversion.")] = 30,
    value: Annotated[str, typer.Option(help="revenue, or clv for credit in expected future value.")] = "revenue",
    workspace: WorkspaceOpt = None,
    against: Annotated[Optional[str], typer.Option(help="Score every model against what the channels caused: "
                                                       "holdouts (the log's experiments) or truth (a simulated "
                                                       "workspace).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Credit per channel: conversions and value, from the workspace's journeys or a path table.

    Example: [bold]plait attribution --model markov --order 2 --paths paths.csv[/]
    Example: [bold]plait attribution --against holdouts[/]
    """
    from plait.analytics.attribution import estimator

    if against is not None:
        with _ws(workspace) as ws:
            r = ws.analytics.attribution_error(against, lookback_days=lookback_days)
        if as_json:
            sys.stdout.write(json.dumps(r, default=_jsonable) + "\n")
            return
        out.print(error_table(r))
        return
    if paths is None:   # the workspace's own journeys
        import pandas as pd

        with _ws(workspace) as ws:
            r = ws.analytics.attribution(model, order=order, method=method, lookback_days=lookback_days, value=value)
        table = pd.DataFrame(r["table"])
        err.print(f"{r['conversions']:,} conversions on {r['paths']:,} paths "
                  f"({r['untouched_conversions']:,} conversions had no touch in the lookback window)")
    else:
        est = estimator(model, order=order, method=method)
        table = est.fit(str(paths)).attribution_.sort_values("conversions", ascending=False)
    if as_json:
        sys.stdout.write(table.to_json(orient="records") + "\n")
        return
    t = Table(show_edge=False, title=f"{model}{f' order {order}' if model == 'markov' else ''}")
    for c in ("channel", "conversions", "value", "share"):
        t.add_column(c, justify="left" if c == "channel" else "right")
    total = table["conversions"].sum() or 1
    for r in table.itertuples(index=False):
        t.add_row(r.channel, f"{r.conversions:,.2f}", f"{r.value:,.2f}", f"{r.conversions / total:.1%}")
    out.print(t)


def error_table(r: dict) -> Table:
    """Models' shares of credit beside the channels' shares of incremental conversions."""
    rows = r["table"]
    chans = [k for k in rows[0] if k not in ("model", "error")]
    inc = r["incremental"]
    t = Table(show_edge=False, pad_edge=False, padding=(0, 1),
              title=f"attribution vs {'simulated truth' if r['against'] == 'truth' else 'holdout experiments'}: "
                    "share of credit per channel (error = share on the wrong channel)")
    t.add_column("model", no_wrap=True)
    t.add_column("error", justify="right")
    for c in chans:
        t.add_column(c, justify="right")
    t.caption = "incremental conversions: " + ", ".join(f"{c} {inc.get(c, 0):,.0f}" for c in chans)
    for row in rows:
        style = "bold green" if row["model"] == "incremental" else None
        t.add_row(row["model"], "" if row["model"] == "incremental" else f"{row['error']:.3f}",
                  *(f"{row[c]:.0%}" for c in chans), style=style)
    return t


@app.command("models")
def models_list(workspace: WorkspaceOpt = None) -> None:
    """The model registry: newest version of every fitted model."""
    with _ws(workspace) as ws:
        recs = ws.models.list()
    t = Table(show_edge=False)
    for c in ("name", "version", "kind", "trained", "window end", "metrics"):
        t.add_column(c)
    for r in recs:
        t.add_row(r.name, str(r.version), r.kind, r.trained_at[:19], r.window_end or "",
                  json.dumps({k: v for k, v in r.metrics.items() if not isinstance(v, dict)}, default=str)[:60])
    out.print(t)


@catalogue_app.command("load")
def catalogue_load(path: Annotated[Path, typer.Argument(help="CSV or Parquet with product_id, category, department, "
                                                              "list_price …")],
                   workspace: WorkspaceOpt = None) -> None:
    """Load or update the product catalogue."""
    with _ws(workspace) as ws:
        n = ws.catalogue.load(path)
    out.print(f"{n:,} products loaded")


# -- consent -------------------------------------------------------------------------
@consent_app.command("set")
def consent_set(
    identifier: Annotated[str, typer.Option(help="The customer, as TYPE:VALUE.")],
    purpose: Annotated[str, typer.Option(help="analytics, personalisation, marketing, partner_sharing, ...")],
    granted: Annotated[bool, typer.Option("--granted/--withdrawn", help="The customer's choice.")],
    channel: Annotated[Optional[str], typer.Option(help="Only for this channel (email, sms, push ...).")] = None,
    wording_version: Annotated[Optional[str], typer.Option(help="Version of the wording the customer saw.")] = None,
    wording: Annotated[Optional[str], typer.Option(help="The wording itself.")] = None,
    source: Annotated[str, typer.Option(help="Where the choice was made.")] = "cli",
    workspace: WorkspaceOpt = None,
) -> None:
    """Record a consent choice (an event in the log and an entry in the signed ledger).

    Example: [bold]plait consent set --identifier email:ann@example.com --purpose marketing --granted --channel email[/]
    """
    with _ws(workspace) as ws:
        r = ws.consent.set(identifier, purpose, granted, channel=channel, wording=wording,
                           wording_version=wording_version, source=source)
    out.print_json(json.dumps(r))


@consent_app.command("show")
def consent_show(
    ref: Annotated[str, typer.Argument(help="A profile id or TYPE:VALUE.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """The customer's consent per purpose (and channel), with the choice behind each."""
    with _ws(workspace) as ws:
        state = ws.consent.state(ref)
    t = Table(show_edge=False)
    for c in ("purpose", "allowed", "why", "since", "wording"):
        t.add_column(c)
    for k, d in state.items():
        t.add_row(k, "yes" if d["allowed"] else "no", d["reason"], (d["chosen_at"] or "")[:19], d["wording_version"] or "")
    out.print(t)


# -- subject rights ------------------------------------------------------------------
@privacy_app.command("export")
def privacy_export(
    identifier: Annotated[str, typer.Option(help="Any identifier of the person, as TYPE:VALUE.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSON file (default: standard output).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Everything held about a person, across all their identifiers, as JSON (right of access).

    Example: [bold]plait privacy export --identifier email:ann@example.com -o ann.json[/]
    """
    with _ws(workspace) as ws:
        doc = ws.rights.access(identifier)
    text = json.dumps(doc, default=str, indent=2)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text)
        err.print(f"{len(doc['events']):,} events and {len(doc['identifiers'])} identifiers written to {output}")


@privacy_app.command("erase")
def privacy_erase(
    identifier: Annotated[Optional[list[str]], typer.Option(
        help="Any identifier of a person, as TYPE:VALUE; repeat for several people.")] = None,
    requests: Annotated[Optional[Path], typer.Option(
        "--file", help="A text file of identifiers, one per line (blank lines and # comments skipped).")] = None,
    reason: Annotated[str, typer.Option(help="Why (kept, under a pseudonym).")] = "erasure request",
    workspace: WorkspaceOpt = None,
) -> None:
    """Erase the people behind identifiers: destroy their keys, rebuild what was derived, record it.
    Several requests are erased together (identity, profiles and the file are rebuilt once).

    Example: [bold]plait privacy erase --identifier email:ann@example.com[/] or [bold]--file requests.txt[/]
    """
    asked = list(identifier or [])
    if requests is not None:
        try:
            lines = requests.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise PlaitError(f"cannot read {requests}: {e}", hint="give a UTF-8 text file, one identifier per line") from e
        asked += [x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")]
    if not asked:
        raise PlaitError("no identifier to erase", hint="give --identifier TYPE:VALUE (repeatable) or --file FILE")
    with _ws(workspace) as ws:
        batch = ws.rights.erase_many(asked, reason=reason)
    for r in batch.erased:
        out.print(f"erased {r.identifiers} identifiers / {r.subjects} subjects ({r.keys_destroyed} keys destroyed, "
                  f"{r.dead_letters_removed} dead letters removed); pseudonym {r.pseudonym}")
    if batch.unknown:
        out.print(f"nobody is known by {len(batch.unknown)} identifier(s), so nothing is held to erase: "
                  + ", ".join(batch.unknown[:10]) + (" …" if len(batch.unknown) > 10 else ""))
    if batch.erased:
        out.print(f"{len(batch.erased)} people erased in {batch.seconds:.1f} s; {batch.erased[0].events_kept:,} events "
                  "kept as unreadable facts")
    residual = sorted({f for r in batch.erased for f in r.residual_files})
    if residual:
        err.print(f"[bold red]still found in:[/] {', '.join(residual)}")
        raise typer.Exit(1)


# -- partner sharing -----------------------------------------------------------------
def _partner_key(key_hex: str) -> bytes:
    try:
        key = bytes.fromhex(key_hex)
    except ValueError as e:
        raise PlaitError("--key is not hex", hint="pass the agreed matching key as 64 hex characters") from e
    return key


@share_app.command("match")
def share_match(
    partner: Annotated[str, typer.Option(help="Partner name (kept in the ledger).")],
    hashes: Annotated[Path, typer.Option(help="The partner's hashes, one hex HMAC per line.", exists=True)],
    key: Annotated[str, typer.Option(help="The agreed matching key (hex).")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the revealed overlap here.")] = None,
    points: Annotated[int, typer.Option(help="Loyalty points for each consenting customer matched (0: none).")] = 50,
    workspace: WorkspaceOpt = None,
) -> None:
    """Match a partner's hashed audience against customers who consent to sharing; reveal the
    overlap only if it reaches the minimum group size; record it in the ledger.

    Example: [bold]plait share match --partner acme --hashes acme.txt --key $KEY -o overlap.txt[/]
    """
    with _ws(workspace) as ws:
        r = ws.sharing.match(partner, _partner_key(key), hashes.read_text().splitlines(), award_points=points)
    if output is not None and r.revealed:
        output.write_text("\n".join(r.matched) + "\n")
    shown = f"{r.overlap:,} matched" if r.revealed else f"fewer than {r.min_group_size} matched: nothing revealed"
    out.print(f"{partner}: {r.submitted:,} submitted, {r.eligible:,} of ours consent; {shown}; "
              f"{r.points_awarded} customers rewarded; ledger entry {r.ledger_index}")


@share_app.command("audience")
def share_audience(
    key: Annotated[str, typer.Option(help="The agreed matching key (hex).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File for our hashed audience.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Write our consenting audience as keyed hashes (for a partner to match on their side)."""
    with _ws(workspace) as ws:
        aud = ws.sharing.audience(_partner_key(key))
        k = ws.settings.privacy.min_group_size
        if len(set(aud.values())) < k:
            raise PlaitError(f"fewer than {k} consenting customers: the audience is too small to share",
                             hint="the minimum group size is privacy.min_group_size")
        ws.ledger.append("sharing", {"direction": "outbound", "hashes": len(aud), "customers": len(set(aud.values()))})
        ws.ledger.head()
    output.write_text("\n".join(sorted(aud)) + "\n")
    err.print(f"{len(aud):,} hashes of {len(set(aud.values())):,} consenting customers written to {output}")


# -- ledger --------------------------------------------------------------------------
@ledger_app.command("append")
def ledger_append(
    kind: Annotated[str, typer.Option(help="What happened: consent, erasure, sharing, ...")],
    data: Annotated[str, typer.Option(help="The entry as a JSON object.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Append one entry and sign the new tree head.

    Example: [bold]plait ledger append --kind sharing --data '{"partner": "acme", "records": 1200}'[/]
    """
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as e:
        raise PlaitError(f"--data is not JSON: {e.msg} at column {e.colno}", hint="quote the object: --data '{\"a\": 1}'") from e
    if not isinstance(payload, dict):
        raise PlaitError("--data must be a JSON object", hint='for example --data \'{"partner": "acme"}\'')
    with _ws(workspace) as ws:
        r = ws.ledger.append(kind, payload)
        head = ws.ledger.head()
    out.print_json(json.dumps({"index": r.index, "leaf_hash": r.leaf_hash, "head": head.as_dict()}))


@ledger_app.command("head")
def ledger_head(workspace: WorkspaceOpt = None) -> None:
    """Sign and print the current tree head (size, time, root, signature) and the public key."""
    with _ws(workspace) as ws:
        out.print_json(json.dumps({"public_key": ws.ledger.public_key_hex, "head": ws.ledger.head().as_dict()}))


@ledger_app.command("prove")
def ledger_prove(
    index: Annotated[int, typer.Argument(help="Entry index (0-based).")],
    workspace: WorkspaceOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the proof document here.")] = None,
) -> None:
    """An inclusion proof a partner can check with `plait ledger verify-proof` and nothing else.

    Example: [bold]plait ledger prove 41 -o proof.json[/]
    """
    with _ws(workspace) as ws:
        led = ws.ledger
        head = led.head()
        doc = {"type": "inclusion", "public_key": led.public_key_hex, "head": head.as_dict(), "index": index,
               "entry": led.entry(index).decode(), "proof": led.prove(index, head.size)}
    _emit(doc, output)


@ledger_app.command("consistency")
def ledger_consistency(
    first: Annotated[int, typer.Argument(help="The earlier tree size (a head the partner holds).")],
    workspace: WorkspaceOpt = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o")] = None,
) -> None:
    """A consistency proof from an earlier signed head to the current one."""
    with _ws(workspace) as ws:
        led = ws.ledger
        old = next((h for h in reversed(led.heads()) if h.size == first), None)
        if old is None:
            raise PlaitError(f"no signed head of size {first}", hint="`plait ledger head` signs one; sizes are entry counts")
        new = led.head()
        doc = {"type": "consistency", "public_key": led.public_key_hex, "old": old.as_dict(), "new": new.as_dict(),
               "proof": led.consistency(first, new.size)}
    _emit(doc, output)


def _emit(doc: dict, output: Optional[Path]) -> None:
    if output is None:
        out.print_json(json.dumps(doc))
    else:
        output.write_text(json.dumps(doc, indent=2))
        err.print(f"proof written to {output}")


@ledger_app.command("verify")
def ledger_verify(workspace: WorkspaceOpt = None) -> None:
    """Recompute the whole stored ledger and check every signed head; exit 0 only if all verifies."""
    from plait.privacy.ledger import LOG_FILE, audit, public_key_of, read_entries

    with _ws(workspace) as ws:
        # Audit the files without opening the ledger for appends: a torn one must still be judged.
        problems = audit(ws.path, public_key_of(ws.vault.secret("ledger-signing-key")))
        size = 0 if problems else len(read_entries(ws.path / LOG_FILE))
    if problems:
        for p in problems:
            err.print(f"[bold red]ledger:[/] {p}")
        raise typer.Exit(1)
    out.print(f"ledger verifies: {size:,} entries, every signed head consistent")


@ledger_app.command("verify-proof")
def ledger_verify_proof(
    proof: Annotated[Path, typer.Argument(help="A document from `plait ledger prove` or `consistency`.", exists=True)],
    public_key: Annotated[Optional[str], typer.Option(help="The ledger's public key (hex), obtained out of band.")] = None,
) -> None:
    """Partner side: check a proof with the public key alone (no workspace needed)."""
    from plait.privacy.ledger import verify_consistency, verify_inclusion

    try:
        doc = json.loads(proof.read_text())
        key = public_key or doc["public_key"]
        if doc["type"] == "inclusion":
            ok = verify_inclusion(key, doc["head"], doc["entry"].encode(), doc["proof"], doc["index"])
        else:
            ok = verify_consistency(key, doc["old"], doc["new"], doc["proof"])
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise PlaitError(f"{proof} is not a proof document ({e})", hint="make one with `plait ledger prove`") from e
    if not ok:
        err.print("[bold red]proof does not verify[/]")
        raise typer.Exit(1)
    out.print(f"{doc['type']} proof verifies")


# -- keys ----------------------------------------------------------------------------
@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Name of the key (and default source name).")],
    workspace: WorkspaceOpt = None,
    source: Annotated[Optional[str], typer.Option(help="Source the key sends as (default: the name).")] = None,
    role: Annotated[str, typer.Option(help="collector (send events), analyst (read-only) or admin.")] = "collector",
    server: ServerOpt = None,
    admin_key: Annotated[Optional[str], typer.Option("--key", envvar="PLAIT_KEY", help="An admin key for --server.")] = None,
) -> None:
    """Create a key; the key alone is printed on the last line.

    Example: [bold]plait keys create --name web-shop[/] · [bold]plait keys create --name bi --role analyst[/] ·
    [bold]plait keys create --name app --server http://127.0.0.1:8080 --key $ADMIN_KEY[/] (in force in ~1 s)
    """
    if server is not None:
        key = _remote(server, admin_key, "/v1/keys", what="creating the key", method="POST",
                      body={"name": name, "role": role, "source": source})["key"]
    else:
        with _ws(workspace) as ws:
            key = ws.keys.create(name, source=source, role=role)
    err.print(f"{role} key for source `{source or name}` (shown once, stored hashed):")
    print(key)


@keys_app.command("list")
def keys_list(workspace: WorkspaceOpt = None, server: ServerOpt = None,
              admin_key: Annotated[Optional[str], typer.Option("--key", envvar="PLAIT_KEY",
                                                           help="An admin key for --server.")] = None) -> None:
    """List keys with their roles (never the keys; hashes only when read from the workspace)."""
    t = Table(show_edge=False)
    for c in ("name", "source", "role", "created", "revoked", "sha256"):
        t.add_column(c)
    if server is not None:
        for k in _remote(server, admin_key, "/v1/keys", what="listing keys"):
            t.add_row(k["name"], k["source"], k["role"], k["created_at"][:19].replace("T", " "),
                      (k["revoked_at"] or "")[:19].replace("T", " "), "")
    else:
        with _ws(workspace) as ws:
            for k in ws.keys.list():
                t.add_row(k.name, k.source, k.role or "collector", str(k.created_at)[:19], str(k.revoked_at or "")[:19],
                          k.key_hash[:12] + "…")
    out.print(t)


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Option(help="Key name.")], workspace: WorkspaceOpt = None,
                server: ServerOpt = None,
                admin_key: Annotated[Optional[str], typer.Option("--key", envvar="PLAIT_KEY",
                                                             help="An admin key for --server.")] = None) -> None:
    """Revoke every active key with this name (on a running server: refused everywhere within ~1 s)."""
    if server is not None:
        from urllib.parse import quote

        n = _remote(server, admin_key, f"/v1/keys/{quote(name, safe='')}", what=f"revoking {name}", method="DELETE")["revoked"]
    else:
        with _ws(workspace) as ws:
            n = ws.keys.revoke(name)
    out.print(f"revoked {n} key(s) named {name}")


# -- log -----------------------------------------------------------------------------
@log_app.command("export")
def log_export(directory: Annotated[Path, typer.Argument(help="Target folder.")], workspace: WorkspaceOpt = None) -> None:
    """Export the log to Parquet, one folder per day (personal fields stay encrypted).

    Example: [bold]plait log export backup/[/]
    """
    with _ws(workspace) as ws:
        n = ws.log.export_parquet(directory)
    out.print(f"exported {n:,} events to {directory}")


@log_app.command("import")
def log_import(directory: Annotated[Path, typer.Argument(help="Folder written by `plait log export`.", exists=True)],
               workspace: WorkspaceOpt = None) -> None:
    """Import a Parquet export; events already in the log are skipped."""
    with _ws(workspace) as ws:
        r = ws.log.import_parquet(directory)
    out.print(f"{r.inserted:,} new events, {r.duplicates:,} already present")


@log_app.command("rejected")
def log_rejected(workspace: WorkspaceOpt = None, limit: Annotated[int, typer.Option("--limit", "-n")] = 20) -> None:
    """The newest entries of the dead-letter table with their reasons."""
    with _ws(workspace) as ws:
        t = Table(show_edge=False)
        for c in ("received", "origin", "position", "field", "reason"):
            t.add_column(c)
        for r in ws.log.rejected(limit):
            t.add_row(str(r["received_at"])[:19], r["origin"] or "", "" if r["position"] is None else str(r["position"]),
                      r["field"] or "", r["reason"])
        out.print(t)


@log_app.command("schemas")
def log_schemas(event: Annotated[Optional[str], typer.Argument(help="One event name.")] = None) -> None:
    """Print the JSON Schemas of the retail event catalogue."""
    from plait.events import json_schemas

    schemas = json_schemas()
    if event is not None:
        if event not in schemas:
            raise PlaitError(f"`{event}` is not in the catalogue", hint="run `plait log schemas` to list them")
        schemas = schemas[event]
    print(json.dumps(schemas, indent=2))


# -- fx ------------------------------------------------------------------------------
@fx_app.command("load")
def fx_load(path: Annotated[Path, typer.Argument(help="CSV with day,currency,rate (rate = base units per 1 unit).", exists=True)],
            workspace: WorkspaceOpt = None) -> None:
    """Load dated exchange rates."""
    with _ws(workspace) as ws:
        n = ws.fx.load_csv(path)
        left = ws.fx.unconverted()
    out.print(f"loaded {n:,} rates; {left:,} amounts still lack a rate")


if __name__ == "__main__":
    main()


@rules_app.command("init")
def rules_init(workspace: WorkspaceOpt = None) -> None:
    """Copy the lifecycle pack (first purchase, birthday, abandoned cart, store arrival, service
    recovery …) into the workspace's rules folder.

    Example: [bold]plait rules init[/]
    """
    from plait.decide.lifecycle import lifecycle_pack

    with _ws(workspace) as ws:
        folder = ws.path / ws.settings.decide.rules
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "lifecycle.yaml"
        if target.exists():
            err.print(f"[red]{target} exists[/]; remove it first to start again")
            raise typer.Exit(1)
        target.write_text(lifecycle_pack())
    out.print(f"wrote {target}; check it with `plait rules check`")


@rules_app.command("check")
def rules_check(path: Annotated[Optional[Path], typer.Argument(help="A rules file or folder (default: the "
                                                                       "workspace's).")] = None,
                workspace: WorkspaceOpt = None) -> None:
    """Validate rules and offers; errors name the file, the rule and the field.

    Example: [bold]plait rules check rules/[/]
    """
    from plait.decide.rules import RuleBook
    from plait.errors import RuleError

    if path is None:
        with _ws(workspace) as ws:
            path = ws.path / ws.settings.decide.rules
    try:
        book = RuleBook.from_path(path)
    except RuleError as e:
        err.print(f"[red]invalid[/]: {e}")
        raise typer.Exit(1) from e
    out.print(f"{path}: {len(book.rules)} rules, {len(book.offers)} offers — valid (version {book.version})")


@app.command("decide")
def decide_cmd(
    customer: Annotated[str, typer.Argument(help="A profile id or an identifier TYPE:VALUE.")],
    placement: Annotated[str, typer.Option(help="web_banner, app_screen, push, email, sms, store_screen, "
                                                "agent_desktop or response.")] = "response",
    event: Annotated[Optional[str], typer.Option(help="Decide on this event name for the customer.")] = None,
    explain: Annotated[bool, typer.Option(help="Check every candidate offer and show why each was rejected.")] = True,
    now: Annotated[Optional[str], typer.Option(help="Decide as at this ISO time (quiet hours, caps, validity); default now.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """The next best actions for one customer now (or ``--now``), with reasons (not recorded in the log).

    Example: [bold]plait decide email:ann@example.com --placement app_screen[/]
    """
    from plait.decide.engine import Decider

    with _ws(workspace) as ws:
        d = Decider.from_workspace(ws, record=False)
        req: dict = {"customer": customer, "placement": placement, "explain": explain}
        if event:
            kind, _, value = customer.partition(":")
            req = {"event": {"type": "track", "event": event,
                             **({"userId": value} if kind == "user_id" else {"anonymousId": value})},
                   "placement": placement, "explain": explain}
        if now:
            req["now"] = now
        r = d.decide(req).as_dict()      # a bad --now is a DecisionError naming the field
    lines = [f"{r['placement']} for {r['profile_id'] or customer}: rules fired {', '.join(r['rules']) or 'none'}"]
    lines += [f"  {i}. {a.get('offer_id', 'message')} score {a.get('score', 0):.3f} — {'; '.join(a['reasons'])}"
              for i, a in enumerate(r["actions"], 1)] or ["  no action"]
    lines += [f"  rejected {x['offer_id']}: {x['reason']}" for x in r["rejected"]]
    _report(as_json, r, lines)


@app.command("fairness")
def fairness_cmd(
    by: Annotated[str, typer.Option(help="traits.gender, traits.address.city, features.age_band …")],
    min_ratio: Annotated[float, typer.Option(help="Flag a group below this share of the best group's rate.")] = 0.8,
    workspace: WorkspaceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Offer, discount and price rates by group from the logged decisions, with flags.

    Example: [bold]plait fairness --by traits.gender[/]
    """
    from plait.decide.fairness import report

    with _ws(workspace) as ws:
        df = report(ws, by, min_ratio=min_ratio)
    _print_frame(df, as_json, f"decisions by {by} (flag: a rate under {min_ratio:.0%} of the best group's)")
