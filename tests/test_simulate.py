from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow.parquet as pq

import plait


def test_simulation_is_seeded_and_writes_truth(tmp_path):
    with plait.connect(tmp_path / "a") as a, plait.connect(tmp_path / "b") as b:
        ra = a.simulate(people=600, days=40, seed=11)
        rb = b.simulate(people=600, days=40, seed=11)
        assert ra.events == rb.events > 5000
        q = "SELECT message_id, event, amount, user_id, anonymous_id FROM events ORDER BY message_id"
        assert a.backend.query(q).equals(b.backend.query(q))
        truth = pq.read_table(a.truth_dir / "identifiers.parquet").to_pylist()
        assert {t["identifier_type"] for t in truth} >= {"cookie", "user_id", "loyalty_card", "email", "phone", "device_id"}


def test_simulated_identifiers_in_events_are_in_the_truth(ws):
    ws.simulate(people=500, days=30, seed=2)
    truth = pq.read_table(ws.truth_dir / "identifiers.parquet")
    known = set(truth["identifier_value"].to_pylist())
    seen = ws.backend.rows(
        "SELECT DISTINCT coalesce(user_id, anonymous_id) AS v FROM events "
        "WHERE NOT (starts_with(anonymous_id, 'rcpt-') OR starts_with(anonymous_id, 'caller-') "
        "OR starts_with(anonymous_id, 'soc-'))")
    missing = [r["v"] for r in seen if r["v"] not in known]
    assert missing == []


def test_world_has_the_omnichannel_mix_and_known_causes(ws):
    ws.simulate(people=1500, days=60, seed=5)
    channels = set(ws.log.stats()["by_channel"])
    assert {"web", "app", "store", "email", "call_center"} <= channels
    events = {r["e"] for r in ws.backend.rows("SELECT DISTINCT event AS e FROM events WHERE event IS NOT NULL")}
    assert {"Order Completed", "Product Returned", "Store Visit", "Call Center Contact", "Loyalty Points Earned",
            "Product Viewed"} <= events
    # Store orders carry the loyalty card as an external id when shown.
    ext = ws.backend.scalar("SELECT count(*) FROM events WHERE json_extract_string(context, '$.externalIds[0].type') = 'loyalty_card'")
    assert ext > 0
    # Planted co-purchase pairs really co-occur more than chance.
    pairs = pq.read_table(ws.truth_dir / "copurchase.parquet").to_pylist()
    a, b = pairs[0]["antecedent"], pairs[0]["consequent"]
    both = ws.backend.scalar(
        "SELECT count(*) FROM events WHERE event = 'Order Completed' AND "
        f"contains(CAST(properties AS VARCHAR), '\"{a}\"') AND contains(CAST(properties AS VARCHAR), '\"{b}\"')")
    only_a = ws.backend.scalar(
        f"SELECT count(*) FROM events WHERE event = 'Order Completed' AND contains(CAST(properties AS VARCHAR), '\"{a}\"')")
    assert only_a > 0
    assert both / only_a > 0.3  # planted partner follows in ~60 % of baskets; chance is well under 5 %
    # Personal fields from sign-ups are sealed, and the truth campaigns have lifts.
    assert ws.backend.scalar("SELECT count(*) FROM events WHERE pii IS NOT NULL") > 500
    lifts = pq.read_table(ws.truth_dir / "campaigns.parquet")["true_lift"].to_pylist()
    assert len(lifts) >= 4


def _orders(w, people, seed, reach=None):
    from plait.simulate.activity import K, Facts, simulate_block

    if reach is not None:
        w.campaigns["reach"] = reach
    facts, caused = Facts(), np.zeros(len(w.campaigns["day"]))
    simulate_block(w, np.arange(people), np.random.default_rng(seed), facts, 1, [], caused)
    return int((np.concatenate(facts.parts["kind"]) == K["Order Completed"]).sum()), caused


def test_true_incremental_orders_match_a_world_without_the_campaigns():
    # The truth the attribution models are judged against: orders each campaign caused. Check it
    # by simulating the same people with and without the campaigns, over several draws.
    from plait.simulate.world import build_world

    w = build_world(6000, 120, date(2025, 1, 1), 4)
    reach = w.campaigns["reach"].copy()
    diffs, caused_total = [], 0.0
    for seed in range(4):
        with_c, caused = _orders(w, 6000, seed, reach)
        without, none = _orders(w, 6000, seed, np.zeros_like(reach))
        assert none.sum() == 0
        diffs.append(with_c - without)
        caused_total += caused.sum()
    caused_mean = caused_total / 4
    assert caused_mean > 300
    sd = np.sqrt(2 * without / 4)        # Poisson noise of the mean difference
    assert abs(np.mean(diffs) - caused_mean) < 4 * sd
    # A campaign without lift causes nothing.
    zero = w.campaigns["lift"] == 0
    assert np.all(caused[zero & (w.campaigns["channel"] != "geofence")] == 0)


def test_campaigns_log_treatment_and_holdout(ws):
    ws.simulate(people=1500, days=60, seed=5)
    groups = ws.backend.query("""
        SELECT json_extract_string(properties, '$.campaign_id') AS campaign_id,
               json_extract_string(properties, '$.group') AS grp, count(*) AS n
        FROM events WHERE event = 'Campaign Exposure' GROUP BY ALL""").to_pandas()
    truth = pq.read_table(ws.truth_dir / "exposures.parquet").to_pandas()
    expect = truth.assign(grp=np.where(truth["treated"], "treatment", "holdout")).groupby(
        ["campaign_id", "grp"]).size().rename("n").reset_index()
    assert groups.sort_values(["campaign_id", "grp"]).reset_index(drop=True).equals(
        expect.sort_values(["campaign_id", "grp"]).reset_index(drop=True))
    # Held-out customers of an email campaign are sent nothing.
    email = pq.read_table(ws.truth_dir / "campaigns.parquet").to_pandas().query("channel == 'email'")["campaign_id"]
    held = ws.backend.scalar(f"""
        SELECT count(*) FROM events h JOIN events s ON s.user_id = h.user_id
          AND json_extract_string(s.properties, '$.campaign_id') = json_extract_string(h.properties, '$.campaign_id')
        WHERE h.event = 'Campaign Exposure' AND json_extract_string(h.properties, '$.group') = 'holdout'
          AND s.event = 'Email Sent' AND json_extract_string(h.properties, '$.campaign_id') IN
          ({', '.join(f"'{c}'" for c in email)})""")
    sent = ws.backend.scalar("SELECT count(*) FROM events WHERE event = 'Email Sent'")
    assert held == 0 and sent > 0
    inc = plait.simulate.true_incremental(ws)
    assert set(inc.index) <= {"email", "sms", "push", "social", "paid_search", "display", "geofence"}
    assert (inc >= 0).all() and inc.sum() > 0
