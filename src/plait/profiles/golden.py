"""The golden record: one value per trait, chosen by survivorship rules, with provenance.

Every trait any system sent about any of a customer's identifiers is a candidate
(``trait_observations``, written by identity resolution). A rule per trait picks the
value that survives (:class:`plait.config.ProfileSettings`); the survivor keeps its
source, time and confidence class — ``declared`` (the customer said it: an identify
call, a sign-up form), ``observed`` (a system saw it: a till, an agent, a device) or
``inferred`` (a model guessed it) — with how many observations support it and how many
other values competed. Nothing is lost on a merge: the candidates stay queryable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from plait.engine.backend import Pipeline
from plait.engine.dialects import quote_literal

if TYPE_CHECKING:
    from plait.config import ProfileSettings

CONFIDENCE_RANK = {"declared": 0, "observed": 1, "inferred": 2}


def golden_sql(version: int, settings: "ProfileSettings") -> str:
    """SQL for ``profile_traits`` of identity ``version``."""
    trust = " ".join(f"WHEN {quote_literal(s)} THEN {i}" for i, s in enumerate(settings.source_trust))
    conf = " ".join(f"WHEN {quote_literal(c)} THEN {i}" for c, i in CONFIDENCE_RANK.items())
    rules = " ".join(f"WHEN {quote_literal(t)} THEN {quote_literal(r)}" for t, r in settings.rules.items())
    default = quote_literal(settings.default_rule)
    return Pipeline().step("obs", f"""
        SELECT m.profile_id, o.trait, o.value, o.source, o.observed_at, o.confidence,
               CASE o.confidence {conf} ELSE 9 END AS conf_rank,
               CASE o.source {trust} ELSE 99 END AS trust_rank,
               CASE o.trait {rules or "WHEN NULL THEN NULL"} ELSE {default} END AS rule
        FROM trait_observations o JOIN identity_map m ON m.version = o.version AND m.identifier = o.identifier
        WHERE o.version = {int(version)} AND o.value IS NOT NULL AND o.value <> 'null'
    """).step("per_value", """
        SELECT profile_id, trait, value, any_value(rule) AS rule, count(*) AS support,
               max(observed_at) AS last_at, min(conf_rank) AS conf_rank, min(trust_rank) AS trust_rank,
               arg_min(source, (conf_rank, trust_rank, -epoch_us(observed_at), source)) AS source,
               arg_min(confidence, (conf_rank, trust_rank, -epoch_us(observed_at), source)) AS confidence
        FROM obs GROUP BY profile_id, trait, value
    """).step("ranked", """
        SELECT *, count(*) OVER (PARTITION BY profile_id, trait) - 1 AS alternatives,
               row_number() OVER (PARTITION BY profile_id, trait ORDER BY
                 CASE rule WHEN 'most_recent' THEN -epoch_us(last_at)
                           WHEN 'most_frequent' THEN -support ELSE conf_rank END,
                 CASE rule WHEN 'most_trusted' THEN trust_rank WHEN 'most_frequent' THEN -epoch_us(last_at) ELSE conf_rank END,
                 CASE rule WHEN 'most_trusted' THEN -epoch_us(last_at) ELSE trust_rank END,
                 -support, value) AS pick
        FROM per_value
    """).sql(f"""SELECT {int(version)} AS version, profile_id, trait, value, source, last_at AS observed_at, confidence,
                 support, alternatives, rule FROM ranked WHERE pick = 1""")


__all__ = ["CONFIDENCE_RANK", "golden_sql"]
