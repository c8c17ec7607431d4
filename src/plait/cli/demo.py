"""``plait demo``: the product's front door, on the simulator's world, in under a minute."""

from __future__ import annotations

import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table


START = date(2025, 1, 1)


def run(out: Console, workspace: Path | None, *, people: int = 1500, days: int = 60) -> None:
    import plait
    from plait.collect.intake import Intake

    t0 = time.perf_counter()
    path = Path(workspace) if workspace else Path(tempfile.mkdtemp(prefix="plait-demo-"))
    with plait.connect(path) as ws:
        out.print(Panel.fit(f"Plait demo — workspace [bold]{ws.path}[/]", style="cyan"))
        out.print(f"[bold]1. Simulate[/] a retailer with {people:,} people over {days} days (web, app, stores, "
                  "call center, email/SMS/push, social, search, display, geofences)…")
        result = ws.simulate(people=people, days=days, seed=7, start=START, progress=True)
        out.print("   " + result.summary().replace("\n", "\n   "))

        out.print("[bold]2. Collect[/] through the Segment-compatible API (a batch with one bad event):")
        key = ws.keys.create("demo-web")
        # Sent on the simulated world's last day, so the models' time windows stay inside it.
        last_day = str(START + timedelta(days=days - 1)).encode()
        intake = Intake(ws.parser, ws.keys, ws.settings.collector)
        body = (b'{"writeKey":"' + key.encode() + b'","batch":['
                b'{"type":"track","event":"Order Completed","userId":"web-1","messageId":"demo-1","timestamp":"'
                + last_day + b'T12:00:00Z",'
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
        _round_trip(out, ws)

        out.print("[bold]4. Identity[/]: stitch shared identifiers, match names/addresses, guard shared devices…")
        ident, prof = ws.resolve()
        out.print(f"   [bold]{ident.identifiers:,} identifiers became {ident.profiles:,} customers[/] "
                  f"({ident.event_links:,} links from shared identifiers, {ident.match_links:,} probabilistic matches, "
                  f"{ident.supernodes:,} shared values kept apart) in {ident.seconds:.1f} s")
        _accuracy(out, ws)
        shown = _showcase(out, ws) or "user_id:web-1"
        _analytics(out, ws, days)
        _decisions(out, ws, people, days)
        _privacy(out, ws, shown)
    out.print(f"[green]done in {time.perf_counter() - t0:.1f} s[/] — next: `plait --workspace {path} serve --fronts 1 --decide-workers 2`, "
              f"`plait --workspace {path} profiles show {shown}`")


def _round_trip(out: Console, ws) -> None:  # noqa: ANN001
    """Export the log to Parquet by day and load it into a fresh workspace, twice."""
    import plait

    with tempfile.TemporaryDirectory(prefix="plait-export-") as tmp:
        n = ws.log.export_parquet(Path(tmp) / "log")
        days = sum(1 for _ in (Path(tmp) / "log").iterdir())
        with plait.connect(Path(tmp) / "copy") as other:
            t0 = time.perf_counter()
            first = other.log.import_parquet(Path(tmp) / "log")
            secs = time.perf_counter() - t0
            parts = len(other.log.parts.names())
            again = other.log.import_parquet(Path(tmp) / "log")
            same = other.log.count() == n
    how = f"written as {parts} immutable Parquet part file(s)" if parts else "inside the engine"
    out.print(f"   exported {n:,} events to Parquet in {days} day folders; re-imported {first.inserted:,} in {secs:.1f} s "
              f"({first.inserted / secs:,.0f}/s, {how}), replayed: +{again.inserted} "
              f"— {'the same log' if same else '[red]a different log[/]'}")


def _accuracy(out: Console, ws) -> None:  # noqa: ANN001
    from plait.identity.quality import score

    j = score(ws)["judged"]
    out.print(f"   against the simulator's truth: pairwise precision {j['precision']:.4f}, recall {j['recall']:.4f} "
              f"(F1 {j['f1']:.4f}) of what the log can identify; {j['recall_all_pairs']:.2f} of all true pairs "
              "(many cookies are never tied to anyone)")


def _showcase(out: Console, ws) -> str | None:  # noqa: ANN001
    # The customer seen on the most channels, with the most identifiers.
    row = ws.backend.rows("""
        SELECT f.profile_id FROM profile_features f JOIN identity_map m ON m.profile_id = f.profile_id
          AND m.version = f.version
        WHERE f.orders_store > 0 AND f.orders_web + f.orders_app > 0 AND f.contacts > 0
        GROUP BY f.profile_id, len(f.channels) ORDER BY len(f.channels) DESC, count(*) DESC, f.profile_id LIMIT 1""")
    if not row:
        return None
    p = ws.profiles.get(row[0]["profile_id"])
    f = p["features"]
    ids = ", ".join(f"{i['identifier_type']}:{i['identifier_value']}" for i in p["identifiers"][:8])
    out.print(f"   one customer, {p['profile_id']}: {ids}")
    out.print(f"     {f['orders']} orders ({f['orders_store']} in store, {f['orders_web'] + f['orders_app']} online), "
              f"revenue {f['revenue']:.2f}, {f['contacts']} calls, favourite {f['favourite_category']}, "
              f"channels {', '.join(f['channels'])}")
    t = p["traits"]
    shown = [f"{k}={t[k]['value']!s:.30} ({t[k]['source']}, {t[k]['confidence']})" for k in ("firstName", "lastName", "email")
             if k in t]
    out.print("     golden traits: " + "; ".join(shown))
    why = {link["reason"] for link in p["links"]}
    out.print("     linked by: " + "; ".join(sorted(why))[:160])
    return p["profile_id"]


def _analytics(out: Console, ws, days: int) -> None:  # noqa: ANN001
    from plait.errors import ModelError

    out.print("[bold]5. Analytics[/]: CLV, segments, basket and sequence rules, propensities, imputed traits")
    try:
        _models(out, ws, holdout=max(7, min(60, days // 3)))
    except ModelError as e:   # a tiny world (e.g. --people 300 --days 20) has too little history
        out.print(f"   [yellow]{str(e).splitlines()[0]}[/] — run the demo with more people or days to see the models")


def _models(out: Console, ws, holdout: int) -> None:  # noqa: ANN001
    import pyarrow.parquet as pq

    r = ws.analytics.clv(calibration_end=_date_sql(ws, holdout))
    p = r["params"]
    h = r["holdout"]
    out.print(f"   BG/NBD r={p['r']:.3f} α={p['alpha']:.2f} a={p['a']:.3f} b={p['b']:.2f}; Gamma-Gamma spend; "
              f"{r['customers']:,} customers, top CLV decile holds {r['top_decile_share']:.0%} of value; "
              f"{holdout}-day holdout: predicted {h['predicted_total']:,.0f} vs actual {h['actual_total']:,.0f} purchases "
              f"(per-customer correlation {h['correlation']:.2f})")
    s = ws.analytics.segments(k_max=6)
    out.print(f"   {s['k']} segments (k by silhouette): " + "; ".join(
        f"{x['description']} ({x['share']:.0%})" for x in s["segments"] if not x["suppressed"]))
    rules = ws.analytics.rules(level="product", min_support=0.002, min_confidence=0.3)
    planted = pq.read_table(ws.truth_dir / "copurchase.parquet").to_pylist()
    pairs = {(x["antecedent"], x["consequent"]) for x in planted} | {(x["consequent"], x["antecedent"]) for x in planted}
    top = ws.backend.rows("SELECT antecedents, consequents FROM analytics_rules ORDER BY lift DESC LIMIT 10")
    hits = sum((t["antecedents"][0], t["consequents"][0]) in pairs for t in top if len(t["antecedents"]) == 1)
    best = rules["top"][0]
    out.print(f"   {rules['rules']:,} product rules from {rules['baskets']:,} baskets; {hits} of the top 10 are pairs the "
              f"simulator planted (e.g. {best['antecedents'][0]} ⇒ {best['consequents'][0]}, lift {best['lift']:.0f}); "
              f"{rules['sequences']:,} 'B within 30 days after A' rules")
    pr = ws.analytics.propensity("return", horizon_days=min(30, holdout))
    out.print(f"   propensity to return in {min(30, holdout)} days: out-of-time AUC {pr['auc']:.2f}, lift at 10% {pr['lift_at_10']:.1f}×; "
              f"drivers {', '.join(n for n, _ in pr['drivers'][:3])}")
    im = ws.analytics.impute("preferred_channel")
    _attribution(out, ws)
    did = (f"imputed for {im['imputed']:,} customers as inferred traits, never over facts" if im["imputed"] else
           "no better than guessing, so nothing imputed")
    out.print(f"   preferred channel where unclear: held-out accuracy {im['accuracy']:.0%} vs {im['baseline']:.0%} "
              f"always guessing the commonest — {did}; {len(ws.models.list())} models in the registry")


def _attribution(out: Console, ws) -> None:  # noqa: ANN001
    markov = ws.analytics.attribution("markov", order=2)
    last = {r["channel"]: r["conversions"] for r in ws.analytics.attribution("last_touch")["table"]}
    t = Table(show_edge=False, title=f"attribution of {markov['conversions']:,} touched conversions "
                                     f"({markov['untouched_conversions']:,} had no touch in 30 days)")
    for c in ("channel", "Markov order 2", "last touch"):
        t.add_column(c, justify="left" if c == "channel" else "right")
    for r in markov["table"][:8]:
        t.add_row(r["channel"], f"{r['conversions']:,.0f}", f"{last.get(r['channel'], 0):,.0f}")
    out.print(t)
    out.print("   typical converting chains (repeats collapsed): " + "; ".join(
        f"{c['chain']} ({c['conversions']:,.0f}, {c['conversion_rate']:.0%} convert)" for c in markov["top_chains"][:4]))
    from plait.analytics.incrementality import measure

    names = {"markov_1": "Markov-1", "markov_2": "Markov-2", "shapley": "Shapley", "last_non_direct": "last non-direct",
             "first_touch": "first touch", "last_touch": "last touch"}
    err = ws.analytics.attribution_error("truth", models=tuple(names))
    out.print("   judged against what the campaigns really caused (the simulator's truth), the share of credit on "
              "the wrong channel: " + ", ".join(f"{names[r['model']]} {r['error']:.0%}" for r in err["table"]
                                                 if r["model"] in names))
    inc = measure(ws, window_days=10).sort_values("incremental_conversions", ascending=False)
    sig = int((inc["significant"] & (inc["lift"] > 0)).sum())
    sig_orders = int((inc["significant_orders"] & (inc["incremental_conversions"] > 0)).sum())
    best = ", ".join(f"{r.campaign_id} ({r.channel}) {r.incremental_conversions:+,.0f} orders "
                     f"[95% CI {r.incremental_low:+,.0f} to {r.incremental_high:+,.0f}]" for r in inc.head(2).itertuples())
    out.print(f"   holdout experiments: {len(inc)} campaigns, 10% held out; a significant lift (95 %) in conversion "
              f"rate for {sig}, in orders for {sig_orders} (by chance alone about one in 20 would show one); largest "
              f"measured: {best} (plait attribution --against holdouts)")


def _decisions(out: Console, ws, people: int, days: int, visits: int = 8000) -> None:  # noqa: ANN001
    import numpy as np

    from plait.config import DecideSettings
    from plait.decide import Decider, RuleBook
    from plait.decide.learners import UpliftThompson
    from plait.profiles.online import load
    from plait.simulate.offers import NO_OFFER, OfferTruth, run_day
    from plait.simulate.world import build_world

    out.print("[bold]6. Decide[/]: a day of site visits streamed through the decision engine, judged against the "
              "simulator's truth of who responds to which offer")
    ws.analytics.discount_levels()                       # share bought on promotion, per customer
    # This retailer personalises its own site under legitimate interest (customers may still object).
    ws.settings.privacy.defaults["personalisation"] = True
    w = build_world(people, days, START, 7)
    truth = OfferTruth(w)
    cats = list(truth.cat_index)
    store = load(ws)
    d = Decider(RuleBook(data=truth.rules("day")), store, settings=DecideSettings(global_control=0.05, caps={}),
                consent_defaults=ws.settings.privacy.defaults)
    d.learners["day"] = UpliftThompson([f"features.favourite_category={c}" for c in cats] + ["features.promo_share"],
                                       {o["id"]: o["category"] for o in truth.offers}, seed=3)
    logged_in = np.flatnonzero(w.registered)
    stream = truth.visits(visits, np.random.default_rng(8), people=logged_in)
    last: dict[str, Any] = {}
    times: list[float] = []

    def engine(k: int, p: int) -> str | None:
        t = time.perf_counter()
        r = d.decide({"customer": f"user_id:web-{p}", "placement": "web_banner", "max_actions": 1})
        times.append(time.perf_counter() - t)
        last["d"] = r
        return r.actions[0]["offer_id"] if r.actions else None

    def learn(p: int, offer: str | None, profit: dict[str, float]) -> None:
        r = last["d"]
        if r.actions:
            d.outcome(r.decision_id, r.actions[0]["offer_id"],
                      {c: profit[c] / (truth.basket[c] * truth.margin) for c in profit})

    arms = [o["id"] for o in truth.offers]
    pick = np.random.default_rng(9)
    res = run_day(truth, stream, {
        "engine": engine, "random": lambda k, p: arms[int(pick.integers(len(arms)))], "none": lambda k, p: NO_OFFER,
        "best": lambda k, p: max(arms + [NO_OFFER], key=lambda a: truth.incremental(p, None if a == NO_OFFER else a))},
        {"engine": learn})
    e, rnd, best = res["engine"], res["random"], res["best"]
    out.print(f"   {visits:,} visits by {len(set(stream.tolist())):,} logged-in customers; {len(truth.offers)} offers "
              f"({len(cats)} categories × 10/20 % off) or none, ranked by an uplift bandit learning from each visit's "
              f"purchases; consent, caps and a 5 % global control group enforced; median decision "
              f"{np.median(times) * 1e6:,.0f} µs")
    out.print(f"   true incremental profit per 1,000 visits: [bold]engine £{e['per_1000_visits']:,.0f}[/] "
              f"(£{e['per_1000_second_half']:,.0f} in the second half of the day, once it has learned) vs random offers "
              f"£{rnd['per_1000_visits']:,.0f} and no action £0; knowing every customer's true response would give "
              f"£{best['per_1000_visits']:,.0f}. The engine made an offer in {e['offer_share']:.0%} of visits "
              f"(random: {rnd['offer_share']:.0%})")
    r = last["d"]
    if r.actions:
        a = r.actions[0]
        out.print(f"   last decision: {a['name'] or a['offer_id']} — " + "; ".join(a["reasons"]))


def _date_sql(ws, days_before_end: int) -> str:  # noqa: ANN001
    from plait.analytics.summaries import DATA_END

    return str(ws.backend.scalar(f"SELECT CAST({DATA_END} - INTERVAL {int(days_before_end)} DAY AS DATE)"))


def _privacy(out: Console, ws, shown: str) -> None:  # noqa: ANN001
    from plait.privacy.groups import aggregate
    from plait.privacy.ledger import verify_inclusion

    out.print("[bold]7. Privacy[/]: k-anonymous aggregates, erasure by crypto-shredding, consent as events, a signed ledger")
    table = aggregate(ws, ["favourite_category"])
    hidden = sum(table.column("suppressed").to_pylist())
    out.print(f"   revenue by favourite category: {table.num_rows - hidden} groups published, {hidden} suppressed "
              f"(fewer than {ws.settings.privacy.min_group_size} customers, or the complement of one)")
    # Two customers with an email and several identifiers and orders ask to be forgotten.
    victims = ws.backend.rows(f"""
        SELECT min(identifier) FILTER (WHERE identifier_type = 'email') AS identifier
        FROM identity_map m JOIN profile_features f USING (profile_id)
        WHERE m.version = {ws.identity.version} AND f.orders > 0 AND m.profile_id <> ?
        GROUP BY m.profile_id HAVING count(*) >= 4 AND identifier IS NOT NULL
        ORDER BY m.profile_id LIMIT 2""", [shown])
    if victims:
        batch = ws.rights.erase_many([v["identifier"] for v in victims], reason="demo: right to erasure")
        done = batch.erased
        out.print(f"   erased {len(done)} people in one pass (`plait privacy erase --file`): "
                  f"{sum(r.identifiers for r in done)} identifiers, {sum(r.keys_destroyed for r in done)} keys destroyed, "
                  f"the log still holds all {done[0].events_kept:,} events (theirs unreadable where personal), "
                  f"{len({f for r in done for f in r.residual_files})} workspace files hold any trace of their details; "
                  f"{batch.seconds:.1f} s")
    # After the erasure: a choice is a new event, and a resolve over an unchanged log is skipped.
    ws.consent.set(shown, "marketing", True, channel="email", wording_version="newsletter-2025-03")
    st = ws.consent.state(shown)
    out.print(f"   {shown}: marketing by email {st['marketing:email']['reason']}, by SMS "
              f"{st['marketing:sms']['reason']} ({'allowed' if st['marketing:sms']['allowed'] else 'not allowed'})")
    led = ws.ledger
    head, last = led.head(), led.size - 1
    proved = verify_inclusion(led.public_key_hex, head, led.entry(last), led.prove(last, head.size), last)
    out.print(f"   ledger: {head.size} entries (erasures, consent changes) under signed head {head.root[:16]}…; "
              f"whole ledger verifies: {not led.verify()}; the newest entry's proof verifies with the public key "
              f"alone: {proved}")


def _now() -> int:
    return time.time_ns() // 1000


def _date(s: str):  # noqa: ANN202
    from datetime import date

    return date.fromisoformat(s)
