"""Path analysis: the chains behind conversions, read from a path table or the log's journeys.

- :func:`top_paths`: converting and non-converting paths with their conversion rate.
- :func:`chains`: paths with consecutive repeats collapsed ("social > search > store"), the
  typical sequences a marketer recognises.
- :func:`transitions`: the first-order channel transition matrix with ``(start)``,
  ``(conversion)`` and ``(null)``, as counts and row probabilities.
- :func:`sankey`: a flow table (source, target, value) with step-numbered nodes ("1 email" →
  "2 search" → "(conversion)"), ready for any Sankey chart.
- :func:`time_to_conversion`: days and touches from a journey's first touch to its conversion.
- :func:`by_first_touch`: per first-touch channel, journeys, conversion rate (Wilson 95 %
  interval), value and the sales cycle (median and 90th-percentile days from first touch to
  conversion) — on the log's journeys (:func:`first_touches`) or a lead funnel from elsewhere
  (one row per lead: channel, started, converted_at, value).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from plait.analytics.attribution import SEP, read_paths

if TYPE_CHECKING:
    import pandas as pd

    from plait.workspace import Workspace


def top_paths(paths: Any, n: int = 10) -> dict[str, "pd.DataFrame"]:
    import pandas as pd

    rows = [{"path": SEP.join(c), "touches": len(c), "conversions": conv, "value": val, "null": null,
             "conversion_rate": conv / (conv + null) if conv + null else 0.0} for c, conv, val, null in read_paths(paths)]
    df = pd.DataFrame(rows)
    return {"converting": df.sort_values(["conversions", "path"], ascending=[False, True]).head(n).reset_index(drop=True),
            "non_converting": df.sort_values(["null", "path"], ascending=[False, True]).head(n).reset_index(drop=True)}


def _collapse(chans: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    for c in chans:
        if not out or out[-1] != c:
            out.append(c)
    return tuple(out)


def chains(paths: Any, n: int = 10, *, min_length: int = 2) -> "pd.DataFrame":
    import pandas as pd

    agg: dict[tuple[str, ...], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for c, conv, _, null in read_paths(paths):
        k = _collapse(c)
        agg[k][0] += conv
        agg[k][1] += null
    rows = [{"chain": SEP.join(k), "conversions": v[0], "journeys": v[0] + v[1],
             "conversion_rate": v[0] / (v[0] + v[1]) if v[0] + v[1] else 0.0}
            for k, v in agg.items() if len(k) >= min_length]
    df = pd.DataFrame(rows, columns=["chain", "conversions", "journeys", "conversion_rate"])
    return df.sort_values(["conversions", "chain"], ascending=[False, True]).head(n).reset_index(drop=True)


def transitions(paths: Any) -> "pd.DataFrame":
    """Counts and row probabilities ``from → to`` over journeys (weighted by how many took them)."""
    import pandas as pd

    counts: dict[tuple[str, str], float] = defaultdict(float)
    for c, conv, _, null in read_paths(paths):
        n = conv + null
        seq = ("(start)", *c)
        for a, b in zip(seq, seq[1:]):
            counts[(a, b)] += n
        counts[(c[-1], "(conversion)")] += conv
        counts[(c[-1], "(null)")] += null
    df = pd.DataFrame([{"from": a, "to": b, "count": v} for (a, b), v in counts.items() if v],
                      columns=["from", "to", "count"])
    df["probability"] = df["count"] / df.groupby("from")["count"].transform("sum")
    return df.sort_values(["from", "count"], ascending=[True, False]).reset_index(drop=True)


def sankey(paths: Any, *, max_steps: int = 5) -> "pd.DataFrame":
    """Flows between step-numbered channels; journeys longer than ``max_steps`` are cut to
    their last ``max_steps`` touches so the end of every journey is shown."""
    import pandas as pd

    flows: dict[tuple[str, str], float] = defaultdict(float)
    for c, conv, _, null in read_paths(paths):
        c = c[-max_steps:]
        nodes = [f"{i + 1} {ch}" for i, ch in enumerate(c)]
        for a, b in zip(nodes, nodes[1:]):
            flows[(a, b)] += conv + null
        flows[(nodes[-1], "(conversion)")] += conv
        flows[(nodes[-1], "(null)")] += null
    return pd.DataFrame([{"source": a, "target": b, "value": v} for (a, b), v in flows.items() if v],
                        columns=["source", "target", "value"]).sort_values(
        ["source", "value"], ascending=[True, False]).reset_index(drop=True)


def time_to_conversion(ws: "Workspace", **kwargs: Any) -> dict[str, Any]:
    """Days and touches from first touch to conversion over the log's converting journeys."""
    from plait.analytics.journeys import journeys_sql

    row = ws.backend.rows(f"""
        WITH j AS ({journeys_sql(ws, **kwargs)}),
        c AS (SELECT len(touches) AS touches, (epoch(conv_t) - epoch(touch_times[1])) / 86400.0 AS days
              FROM j WHERE conv_t IS NOT NULL AND len(touches) > 0)
        SELECT count(*) AS journeys, median(days) AS median_days, avg(days) AS mean_days,
               quantile_cont(days, 0.9) AS p90_days, median(touches) AS median_touches, avg(touches) AS mean_touches
        FROM c""")[0]
    return {k: (float(v) if v is not None and k != "journeys" else v) for k, v in row.items()}


def first_touches(ws: "Workspace", **kwargs: Any) -> "pd.DataFrame":
    """The log's journeys as leads: first touch channel and time, conversion time (NaT for a
    journey that has not converted) and value."""
    from plait.analytics.journeys import journeys_sql

    return ws.backend.query(f"""
        WITH j AS ({journeys_sql(ws, **kwargs)})
        SELECT touches[1] AS channel, touch_times[1] AS started, conv_t AS converted_at, value
        FROM j WHERE len(touches) > 0 ORDER BY ALL""").to_pandas()


def by_first_touch(leads: "pd.DataFrame") -> "pd.DataFrame":
    """Conversion and sales cycle per first-touch channel from one row per lead or journey
    (``channel``, ``started``, ``converted_at`` — empty when not converted — and optional
    ``value``)."""
    import numpy as np
    import pandas as pd

    from plait.analytics.incrementality import _wilson
    from plait.errors import ModelError

    missing = {"channel", "started", "converted_at"} - set(leads.columns)
    if missing:
        raise ModelError(f"first-touch analysis needs columns {', '.join(sorted(missing))}")
    d = leads.assign(channel=leads["channel"].fillna("(unknown)").replace("", "(unknown)"),
                     days=(pd.to_datetime(leads["converted_at"], utc=True)
                           - pd.to_datetime(leads["started"], utc=True)).dt.total_seconds() / 86400)
    d["value"] = d["value"].fillna(0) if "value" in d else 0.0
    rows = []
    for ch, g in d.groupby("channel", sort=False):
        won = g["days"].notna()
        k, n = int(won.sum()), len(g)
        lo, hi = _wilson(k, n)
        days = g.loc[won, "days"]
        rows.append({"channel": ch, "journeys": n, "conversions": k, "conversion_rate": k / n,
                     "rate_low": lo, "rate_high": hi, "value": float(g.loc[won, "value"].sum()),
                     "median_days": float(days.median()) if k else np.nan,
                     "p90_days": float(days.quantile(0.9)) if k else np.nan})
    return pd.DataFrame(rows).sort_values(["journeys", "channel"], ascending=[False, True]).reset_index(drop=True)


__all__ = ["by_first_touch", "chains", "first_touches", "sankey", "time_to_conversion", "top_paths", "transitions"]
