"""SQL dialects: the only place engine differences live.

Steps elsewhere write SQL in DuckDB's dialect and call the dialect for the few
constructs that differ (partitioned Parquet, as-of joins, id hashes).
A Spark dialect will override these and transpile the rest (sqlglot turns DuckDB SQL
into Spark SQL); it arrives with the Spark backend.
"""

from __future__ import annotations

from collections.abc import Iterable


class Dialect:
    """Base dialect (DuckDB semantics)."""

    name = "duckdb"

    def id_hash(self, column: str) -> str:
        """64-bit id hash: the first 8 bytes of MD5, read big-endian (see :mod:`plait.log.seen`).
        From the hex digest: DuckDB's ``md5`` plus a hex cast costs 0.11 µs a row against
        0.33 µs for ``md5_number_upper`` (2 M ids, one run each)."""
        return f"CAST(('0x' || left(md5({column}), 16)) AS UBIGINT)"

    def closed_text(self, expr: str, values: Iterable[str]) -> str:
        """``expr``, text that is one of ``values`` or NULL, typed so that it leaves the engine as
        an Arrow dictionary (DuckDB: an ENUM), which the Parquet writer stores without hashing
        every row (a mapped import's constant columns: 7 % of the part's writing). A value
        outside ``values`` is an error, so callers pass only what ``expr`` can be."""
        vals = sorted(set(values))
        return f"CAST({expr} AS ENUM({', '.join(quote_literal(v) for v in vals)}))" if vals else expr

    def read_parquet(self, files: str | list[str], *, hive: bool = False, numbered: bool = False) -> str:
        """Read Parquet files (a glob or a list). ``numbered`` adds ``__row``, a BIGINT
        unique across the files: the file's place in the list in the high 32 bits, the
        row's place in its file in the low ones (a list is required for it)."""
        src = quote_literal(files) if isinstance(files, str) else "[" + ", ".join(quote_literal(f) for f in files) + "]"
        opts = (", hive_partitioning = true" if hive else "") + ", union_by_name = true"
        if not numbered:
            return f"read_parquet({src}{opts})"
        if isinstance(files, str):
            raise TypeError("numbered Parquet reads need a list of files, not a glob")
        return (f"(SELECT * EXCLUDE (filename, file_row_number), (CAST(list_position({src}, filename) AS BIGINT) << 32) "
                f"+ file_row_number AS __row FROM read_parquet({src}{opts}, filename = true, file_row_number = true))")

    def copy_parquet(self, query: str, path: str, *, partition_by: str | None = None) -> str:
        """Write a query's rows as zstd Parquet (the log's export; part files are written by
        :meth:`~plait.engine.backend.Backend.write_parquet`)."""
        part = f", PARTITION_BY ({partition_by}), OVERWRITE_OR_IGNORE true" if partition_by else ""
        return f"COPY ({query}) TO {quote_literal(path)} (FORMAT parquet, COMPRESSION zstd{part})"

    def as_of_rate(self, events: str, rates: str) -> str:
        """Join each event to the newest rate of its currency on or before its day."""
        return (
            f"SELECT e.*, r.rate AS fx_rate FROM {events} e "
            f"ASOF LEFT JOIN {rates} r ON e.currency = r.currency AND e.day >= r.day"
        )

    def similarity(self, a: str, b: str) -> str:
        """Jaro–Winkler similarity of two strings, 0..1."""
        return f"jaro_winkler_similarity({a}, {b})"

    def edit_distance(self, a: str, b: str) -> str:
        """Damerau–Levenshtein distance (a transposition counts as one edit)."""
        return f"damerau_levenshtein({a}, {b})"


def most_frequent(value: str, count: str, latest: str) -> str:
    """An aggregate: the ``value`` with the highest ``count``; a tie goes to the one seen
    most recently (``latest``), then to the smallest value. DuckDB's ``mode()`` and an
    ``arg_max`` on the count alone settle a tie by whichever row a thread met first, so the
    same events gave a customer a different favourite category from one run to the next."""
    return f"arg_max({value}, ({count}, {latest}, {value}))"


def money_sum(value: str, where: str | None = None) -> str:
    """An aggregate: the total of an amount, to the cent. A sum of doubles depends on the
    order the threads add them in (770.6 one run, 770.6000000000001 the next), and ratios,
    scores and rankings computed from such totals then differed between runs over the same events."""
    filt = f" FILTER (WHERE {where})" if where else ""
    return f"round(sum({value}){filt}, 2)"


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
