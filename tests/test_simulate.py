from __future__ import annotations

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
