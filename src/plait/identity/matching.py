"""Probabilistic matching of people records (Fellegi–Sunter, EM-trained), on the engine.

Records are the personal data events carry (a web account, a till sign-up form, a
call-center note): names, address, birthday, email, phone. The engine forms candidate
pairs with blocking rules and grades each comparison into levels (exact, nickname,
one typo, ...). The weights are learned the way Splink learns them: ``u`` (how often
a level occurs between *different* people) from random record pairs, ``m`` (how often
between the *same* person) and the match prior by expectation–maximisation over the
distinct comparison patterns of the blocked pairs. A pair's match probability is the
posterior of its pattern; every link keeps it and the levels that drove it.

Built on the engine seam rather than on Splink: the comparisons, blocking and scoring
are a few SQL statements here, the EM runs over a few thousand distinct patterns in
numpy, and it avoids a second SQL framework next to our own seam (Splink 4/5 bring their
own DuckDB/Spark layer and pins). Measured accuracy and speed are in docs/benchmarks.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from plait.engine.backend import Pipeline
from plait.engine.dialects import Dialect

if TYPE_CHECKING:
    from plait.engine.backend import Backend

RECORD_FIELDS = ("first", "first_canon", "last", "street", "postcode", "city", "region", "birthday", "email", "email_local",
                 "email_domain", "email_letters", "email_digits", "phone")


@dataclass(frozen=True)
class Comparison:
    """One field (or group of fields) graded into levels, highest evidence first.

    ``levels`` are ``(label, condition)`` with conditions over ``l.`` and ``r.``
    columns; ``{sim:col}``/``{dist:col}`` become the dialect's similarity and edit
    distance of ``l.col`` and ``r.col``. The first matching level wins; none matching is level 0 ("differs").
    A pair where ``null_if`` holds has no evidence for this comparison (level -1).
    """

    name: str
    null_if: str
    levels: tuple[tuple[str, str], ...]
    tf_levels: tuple[str, ...] = ()       # levels whose weight follows the surname's frequency

    def labels(self) -> list[str]:
        """Label per level number (0 = differs)."""
        return ["differs"] + [lab for lab, _ in reversed(self.levels)]

    def to_sql(self, d: Dialect) -> str:
        def fn(m: re.Match) -> str:
            col = m.group(2)
            f = d.similarity if m.group(1) == "sim" else d.edit_distance
            return f(f"l.{col}", f"r.{col}")

        parts = [f"WHEN {self.null_if} THEN -1"]
        n = len(self.levels)
        for i, (_, cond) in enumerate(self.levels):
            parts.append(f"WHEN {_PLACEHOLDER.sub(fn, cond)} THEN {n - i}")
        return "CASE " + " ".join(parts) + " ELSE 0 END"


_PLACEHOLDER = re.compile(r"\{(sim|dist):(\w+)\}")


def default_comparisons(extra: list[str] = ()) -> list[Comparison]:
    """The comparisons over Segment's reserved traits (plus ``extra`` traits, exact or close)."""
    first_close = "(l.first_canon = r.first_canon OR {sim:first} >= 0.9)"
    out = [
        Comparison("name", "l.last IS NULL OR r.last IS NULL", (
            ("first and last name equal", "l.first = r.first AND l.last = r.last"),
            ("names swapped", "l.first = r.last AND l.last = r.first"),
            ("last name equal, first a nickname or close", f"l.last = r.last AND {first_close}"),
            ("last name one typo apart, first close", "{dist:last} <= 1 AND " + first_close),
            ("last name equal", "l.last = r.last"),
            ("last name one typo apart", "{dist:last} <= 1"),
        ), tf_levels=("first and last name equal", "last name equal, first a nickname or close", "last name equal")),
        Comparison("street", "l.street IS NULL OR r.street IS NULL", (
            ("street equal", "l.street = r.street"),
            ("street close", "{sim:street} >= 0.9"),
        )),
        Comparison("postcode", "l.postcode IS NULL OR r.postcode IS NULL", (
            ("postcode equal", "l.postcode = r.postcode"),
            ("postcode district equal", "left(l.postcode, length(l.postcode) - 3) = left(r.postcode, length(r.postcode) - 3)"),
        )),
        # City, state and country speak only where postcodes cannot (one side has none):
        # with both postcodes present they would count the same place twice.
        Comparison("locality", "(l.city IS NULL OR r.city IS NULL) AND (l.region IS NULL OR r.region IS NULL) "
                               "OR (l.postcode IS NOT NULL AND r.postcode IS NOT NULL)", (
            ("city equal", "l.city = r.city AND coalesce(l.region = r.region, true)"),
            ("state or country equal", "l.region = r.region"),
        )),
        Comparison("birthday", "l.birthday IS NULL OR r.birthday IS NULL", (
            ("birthday equal", "l.birthday = r.birthday"),
            ("birthday one digit apart", "{dist:birthday} <= 1"),
        )),
        Comparison("email", "l.email IS NULL OR r.email IS NULL", (
            ("email equal", "l.email = r.email"),
            # A typo changes a letter; mailboxes that differ only in separators or digits
            # (ann.lee@ / ann_lee@ / annlee2@) usually belong to different people.
            ("email one typo apart", "l.email_domain = r.email_domain AND l.email_digits = r.email_digits "
                                     "AND l.email_letters <> r.email_letters AND {dist:email_letters} <= 1"),
            # No "same mailbox name at another domain" level: mailbox names repeat people's
            # names (ann.lee@ at two providers is usually two Ann Lees), so it would count
            # the name twice.
        )),
        Comparison("phone", "l.phone IS NULL OR r.phone IS NULL", (
            ("phone equal", "l.phone = r.phone"),
            ("last 7 digits equal", "right(l.phone, 7) = right(r.phone, 7)"),
        )),
    ]
    for t in extra:
        c = f"x_{t}"
        out.append(Comparison(t, f"l.{c} IS NULL OR r.{c} IS NULL", (
            (f"{t} equal", f"l.{c} = r.{c}"), (f"{t} close", "{sim:" + c + "} >= 0.92"))))
    return out


DEFAULT_BLOCKING = (
    "l.postcode = r.postcode AND l.last = r.last",
    "l.postcode = r.postcode AND l.first_canon = r.first_canon",
    "l.postcode = r.postcode AND l.street = r.street",
    "l.phone = r.phone",
    "l.last = r.last AND l.birthday = r.birthday",
    "l.email_local = r.email_local",
    "l.email_domain = r.email_domain AND left(l.email_local, 5) = left(r.email_local, 5) AND l.last = r.last",
    "l.email_domain = r.email_domain AND right(l.email_local, 5) = right(r.email_local, 5) AND l.first_canon = r.first_canon",
)


@dataclass
class MatchModel:
    """Learned Fellegi–Sunter parameters: per comparison, ``m`` and ``u`` by level."""

    comparisons: list[Comparison]
    threshold: float = 0.99
    min_fields: int = 2
    max_iterations: int = 50
    m_: list[np.ndarray] = field(default_factory=list)
    u_: list[np.ndarray] = field(default_factory=list)
    lambda_: float = 0.0
    prior_: float = 0.0
    surname_u_: float = 0.0
    iterations_: int = 0
    pairs_: int = 0

    def weights(self) -> list[np.ndarray]:
        """log2 Bayes factor of each level of each comparison."""
        return [np.log2(m / u) for m, u in zip(self.m_, self.u_)]

    def explain(self) -> list[dict]:
        return [{"comparison": c.name, "level": lab, "m": float(m[i]), "u": float(u[i]), "weight": float(np.log2(m[i] / u[i]))}
                for c, m, u in zip(self.comparisons, self.m_, self.u_) for i, lab in enumerate(c.labels())]


class Matcher:
    """Trains and applies a :class:`MatchModel` over a records table on a backend."""

    def __init__(self, backend: "Backend", model: MatchModel, *, seed: int = 0, u_pairs: int = 1_000_000) -> None:
        self.backend = backend
        self.model = model
        self.seed = seed
        self.u_pairs = u_pairs

    def _gammas(self) -> str:
        d = self.backend.dialect
        return ", ".join(f"{c.to_sql(d)} AS g{i}" for i, c in enumerate(self.model.comparisons))

    def run(self, records: pa.Table) -> pa.Table:
        """Fit on ``records`` and return the pairs at or above the threshold:
        ``rid_l, rid_r, probability, weight`` plus a ``g{i}`` level per comparison."""
        m = self.model
        b = self.backend
        n = records.num_rows
        b.temp_table("match_records", records)
        k = len(m.comparisons)
        if n < 2:
            return _empty(k)
        # u: level frequencies among random pairs (nearly all of them different people).
        rng = np.random.default_rng(self.seed)
        size = min(self.u_pairs, n * (n - 1) // 2)
        a = rng.integers(0, n, size)
        c = rng.integers(0, n - 1, size)
        c = np.where(c >= a, c + 1, c)
        b.temp_table("match_upairs", pa.table({"i": a, "j": c}))
        u_sql = (f"SELECT {self._gammas()} FROM match_upairs p JOIN match_records l ON l.rid = p.i "
                 "JOIN match_records r ON r.rid = p.j")
        nlev = [len(cmp.levels) + 1 for cmp in m.comparisons]
        ucounts = _level_counts(b.query(f"SELECT {', '.join(f'g{i}' for i in range(k))}, count(*) AS n FROM ({u_sql}) GROUP BY ALL"), nlev)
        m.u_ = [_probabilities(x, floor=1.0 / (size + 1)) for x in ucounts]
        # Candidate pairs: the union of the blocking rules. Pairs inside one deterministic
        # customer are known matches: they train the model (and start m) but are not predicted.
        blocks = " UNION ".join(
            f"SELECT l.rid AS rid_l, r.rid AS rid_r FROM match_records l JOIN match_records r "
            f"ON {rule} AND l.rid < r.rid" for rule in DEFAULT_BLOCKING)
        pipe = (Pipeline()
                .step("cand", blocks)
                .step("scored", f"SELECT p.rid_l, p.rid_r, l.comp = r.comp AS known, {self._gammas()} FROM cand p "
                                "JOIN match_records l ON l.rid = p.rid_l JOIN match_records r ON r.rid = p.rid_r"))
        b.execute("CREATE OR REPLACE TEMP TABLE match_pairs AS " + pipe.sql())
        gcols = ", ".join(f"g{i}" for i in range(k))
        patterns = b.query(f"SELECT {gcols}, known, count(*) AS n FROM match_pairs GROUP BY ALL")
        if not patterns.num_rows:
            return _empty(k)
        G = np.stack([patterns.column(f"g{i}").to_numpy() for i in range(k)], axis=1)
        w = patterns.column("n").to_numpy().astype(float)
        known = patterns.column("known").to_numpy(zero_copy_only=False).astype(bool)
        m.pairs_ = int(w[~known].sum())
        # The prior is the chance that two *random* records match, estimated (as Splink
        # does) from the deterministic links: known matching pairs over all record pairs.
        # Blocking made candidate pairs look alike, but that evidence is already in the
        # comparisons, so it must not be counted again through a blocked-set prior.
        sizes = np.unique(records.column("comp").to_numpy(), return_counts=True)[1].astype(float)
        known_pairs = float((sizes * (sizes - 1) / 2).sum())
        prior = float(np.clip(known_pairs / (n * (n - 1) / 2), 1e-12, 0.5))
        self._em(G, w, known, prior)
        # Matches EM found among the unknown candidates join the known ones in the prior.
        m.prior_ = float(np.clip((known_pairs + m.lambda_ * m.pairs_) / (n * (n - 1) / 2), 1e-12, 0.5))
        # Score every unknown candidate pair: the pattern's weight, adjusted for how common
        # the shared surname is (Splink's term-frequency adjustment): two Smiths agreeing
        # says less than two Thornbridges.
        pairs = b.query(f"""
            WITH tf AS (SELECT last, count(*) / {float(n)} AS tf FROM match_records WHERE last IS NOT NULL GROUP BY last)
            SELECT p.*, tf.tf AS tf_last FROM match_pairs p JOIN match_records l ON l.rid = p.rid_l
            LEFT JOIN tf ON tf.last = l.last WHERE NOT p.known""")
        if not pairs.num_rows:
            return _empty(k)
        Gp = np.stack([pairs.column(f"g{i}").to_numpy() for i in range(k)], axis=1)
        weight = self._weights(Gp)
        tf = pairs.column("tf_last").to_numpy(zero_copy_only=False).astype(float)
        m.surname_u_ = float(self.backend.scalar(
            f"SELECT sum(c * c) / {float(n) ** 2} FROM (SELECT count(*) AS c FROM match_records WHERE last IS NOT NULL "
            "GROUP BY last)") or 0.0)
        for i, c in enumerate(m.comparisons):
            levels = [lvl for lvl, (label, _) in zip(range(len(c.levels), 0, -1), c.levels) if label in c.tf_levels]
            if not levels or not m.surname_u_:
                continue
            hit = np.isin(Gp[:, i], levels) & ~np.isnan(tf)
            weight[hit] += np.log2(m.surname_u_ / tf[hit])
        prob = 1.0 / (1.0 + np.power(2.0, -np.clip(weight + math.log2(m.prior_ / (1 - m.prior_)), -1000, 1000)))
        fields = (Gp >= 0).sum(axis=1)
        keep = (prob >= m.threshold) & (fields >= m.min_fields)
        idx = np.flatnonzero(keep)
        idx = idx[np.lexsort((pairs.column("rid_r").to_numpy()[idx], pairs.column("rid_l").to_numpy()[idx], -prob[idx]))]
        out = pairs.take(pa.array(idx)).drop_columns(["known", "tf_last"])
        return out.append_column("probability", pa.array(prob[idx])).append_column("weight", pa.array(weight[idx]))

    def _em(self, G: np.ndarray, w: np.ndarray, known: np.ndarray, prior: float) -> None:
        """EM for ``m`` with ``u`` (random pairs) and the prior held fixed; known pairs are matches."""
        m = self.model
        k = G.shape[1]
        nlev = [len(c.levels) + 1 for c in m.comparisons]
        # Start m from the pairs already known to match (same deterministic customer), or
        # from "the top level is likely for matches" (Splink's default) where there are none.
        m.m_ = []
        starts = []
        for i, n in enumerate(nlev):
            g = G[known, i]
            ok = g >= 0
            counts = np.bincount(g[ok], weights=w[known][ok], minlength=n)
            start = np.geomspace(0.05, 1.0, n)
            starts.append(start / start.sum())
            m.m_.append(_probabilities(counts + starts[-1], floor=1e-3))
        lam = prior
        for it in range(m.max_iterations):
            logm = np.zeros(G.shape[0])
            logu = np.zeros(G.shape[0])
            for i in range(k):
                g = G[:, i]
                ok = g >= 0
                logm[ok] += np.log(m.m_[i][g[ok]])
                logu[ok] += np.log(m.u_[i][g[ok]])
            z = logm - logu + math.log(lam / (1 - lam))
            p = 1.0 / (1.0 + np.exp(-np.clip(z, -700, 700)))
            # Pairs inside one deterministic customer are matches, not guesses (semi-supervised EM).
            p[known] = 1.0
            pw = p * w
            unknown = w[~known].sum()
            change = 0.0
            for i in range(k):
                g = G[:, i]
                ok = g >= 0
                # One pseudo-pair spread like the start keeps unseen levels sensible, and the
                # floor admits that people do change numbers, move and mistype.
                new = _probabilities(np.bincount(g[ok], weights=pw[ok], minlength=nlev[i]) + starts[i], floor=1e-3)
                change = max(change, float(np.abs(new - m.m_[i]).max()))
                m.m_[i] = new
            m.iterations_ = it + 1
            if change < 1e-6:
                break
        # Share of the unknown candidate pairs the model takes for matches (a diagnostic).
        m.lambda_ = float(pw[~known].sum() / unknown) if unknown else 0.0

    def _weights(self, G: np.ndarray) -> np.ndarray:
        """Match weight (log2 Bayes factor) of each comparison pattern; a null level adds nothing."""
        weight = np.zeros(G.shape[0])
        for i, wts in enumerate(self.model.weights()):
            g = G[:, i]
            ok = g >= 0
            weight[ok] += wts[g[ok]]
        return weight


def _level_counts(t: pa.Table, nlev: list[int]) -> list[np.ndarray]:
    counts = []
    n = t.column("n").to_numpy().astype(float)
    for i, size in enumerate(nlev):
        g = t.column(f"g{i}").to_numpy()
        ok = g >= 0
        counts.append(np.bincount(g[ok], weights=n[ok], minlength=size))
    return counts


def _probabilities(counts: np.ndarray, *, floor: float) -> np.ndarray:
    total = counts.sum()
    p = counts / total if total else np.full(counts.size, 1.0 / max(counts.size, 1))
    p = np.maximum(p, floor)
    return p / p.sum()


def _empty(k: int) -> pa.Table:
    return pa.table({"rid_l": pa.array([], pa.int64()), "rid_r": pa.array([], pa.int64()),
                     **{f"g{i}": pa.array([], pa.int32()) for i in range(k)},
                     "probability": pa.array([], pa.float64()), "weight": pa.array([], pa.float64())})


__all__ = ["Comparison", "DEFAULT_BLOCKING", "MatchModel", "Matcher", "RECORD_FIELDS", "default_comparisons"]
