"""JSONL of Segment events, normalised by the engine in bulk.

The parser (:mod:`plait.events.contract`) costs about 20 µs an event in Python; a
bulk file of millions of events is better read, checked and laid out by the engine
in one parallel pass. This module compiles the parser's rules into one SQL query:

- a row is taken by the engine only when it is *surely* valid and simple: a JSON
  object with a ``messageId``, ids, names and channels of plain printable text,
  RFC 3339 timestamps, no personal fields (those must be sealed per subject) and,
  for catalogued events, properties that pass :func:`plait.events.sql.surely_valid`;
- every other line — malformed, invalid, unusual or personal — goes to the parser,
  which stays the only authority on rejections and their reasons.

Each line is parsed once (``json_transform`` reads every top-level field as its JSON text,
and types and values come from that text), and ``properties`` and ``context`` once more
each. One known difference: with a key repeated in one object, DuckDB reads the first value
and the parser the last (checking every object for repeats cost a third of the query; see
docs/benchmarks.md, session 19).

``tests/test_fastpath.py`` checks, over random events, that the engine's rows equal
the parser's.
"""

from __future__ import annotations

import functools
import itertools
import json

from plait.engine.dialects import quote_ident, quote_literal
from plait.events.catalogue import CATALOGUE
from plait.events.contract import CALL_TYPES
from plait.events.sql import (
    MONEY,
    NUM,
    amount,
    catalogue_channel,
    explicit_channel,
    in_years,
    spec_paths,
    surely_valid,
    utc_day,
    utc_time,
)

# Paths read from properties and context on every row, each object parsed once for all of them.
_PP = ("channel", "order_id", "store_id", "currency", *MONEY)   # read from properties
_CP = ("channel", "library.name")   # and from context
FIELDS = ("type", "messageId", "anonymousId", "userId", "event", "name", "category", "properties", "traits",
          "context", "timestamp", "originalTimestamp", "sentAt", "receivedAt", "channel", "groupId", "previousId",
          "integrations", "writeKey")
_T = {f: i + 1 for i, f in enumerate(FIELDS)}
# Fields read as text too: objects are not (their text would be serialised for nothing).
_OBJECTS = ("properties", "traits", "context", "integrations")
TEXT_FIELDS = tuple(f for f in FIELDS if f not in _OBJECTS)
_S = {f: i + 1 for i, f in enumerate(TEXT_FIELDS)}
TS_RE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$"
# What Python's bytes.strip() removes from a line, less the line breaks the reader splits on (a line
# of these alone is blank and skipped, as by the parser's path). Most lines start with `{`, which
# settles it without trimming (trimming every line cost 0.3 s of CPU per 500 k lines).
_BLANK = "' ' || chr(9) || chr(11) || chr(12)"
# Printable ASCII with no space at either end: text Python's str.strip() leaves as it is.
PLAIN_RE = r"^[!-~]([ -~]*[!-~])?$"
_LIBS = (("analytics.js", "web"), ("analytics-next", "web"), ("analytics-ios", "app"), ("analytics-swift", "app"),
         ("analytics-android", "app"), ("analytics-kotlin", "app"), ("analytics-react-native", "app"),
         ("analytics_flutter", "app"), ("analytics-flutter", "app"))


# Every top-level field read in one parse of the line, each as its JSON text (three parses —
# json_type, json_extract_string and json_extract — cost 1.15 s per 500 k lines against 0.41).
_STRUCTURE = "{" + ", ".join(f'"{f}": "JSON"' for f in FIELDS) + "}"


def _type_of(raw: str) -> str:
    """The JSON type of a value's text (as the engine writes it), named as ``json_type`` names
    it; JSON ``null`` reads as absent (NULL), which every check of these fields takes alike.
    Integers of up to 18 digits are surely BIGINT; longer ones are called DOUBLE, which checks
    that accept only integers refuse, leaving them to the parser."""
    return (f"CASE WHEN {raw} IS NULL THEN NULL WHEN starts_with({raw}, '\"') THEN 'VARCHAR' "
            f"WHEN starts_with({raw}, '{{') THEN 'OBJECT' WHEN starts_with({raw}, '[') THEN 'ARRAY' "
            f"WHEN {raw} IN ('true', 'false') THEN 'BOOLEAN' "
            f"WHEN regexp_full_match({raw}, '-?[0-9]{{1,18}}') THEN 'BIGINT' "
            f"WHEN regexp_full_match({raw}, '-?[0-9][0-9.eE+-]*') THEN 'DOUBLE' ELSE 'OTHER' END")


# The types an id may have (text, or an integer): JSON null reads as absent, and integers too long
# to be surely BIGINT are left to the parser (see _type_of).
_ID_TYPES = "('VARCHAR', 'BIGINT')"


def _text_of(raw: str) -> str:
    """A field's value as ``json_extract_string`` gives it: a string's text (unescaped by the
    engine only where the writer escaped something), else the JSON text."""
    return (f"CASE WHEN starts_with({raw}, '\"') THEN CASE WHEN contains({raw}, '\\') "
            f"THEN json_extract_string({raw}, '$') ELSE {raw}[2:-2] END ELSE {raw} END")


def _raw(field: str) -> str:
    """A top-level field's JSON text, as the engine writes it."""
    return f"__r_{_T[field]}"


def _t(field: str) -> str:
    """A top-level field's JSON type (from its JSON text, :func:`_type_of`)."""
    return f"__t_{_T[field]}"


def _s(field: str) -> str:
    """A top-level field's value as text (from its JSON text, :func:`_text_of`)."""
    return f"__s_{_S[field]}"


def _top_id(field: str) -> str:
    return f"CASE WHEN {_t(field)} IN {_ID_TYPES} THEN nullif({_s(field)}, '') END"


def _lit(values) -> str:
    return ", ".join(quote_literal(v) for v in values)


def _absent(field: str) -> str:
    return f"({_raw(field)} IS NULL)"


def _plain(expr: str) -> str:
    return f"regexp_full_match({expr}, {quote_literal(PLAIN_RE)})"


def _id_ok(field: str) -> str:
    """Absent, an integer, or plain text."""
    s = _s(field)
    return f"({_absent(field)} OR {_t(field)} = 'BIGINT' OR ({_t(field)} = 'VARCHAR' AND ({s} = '' OR {_plain(s)})))"


def _ts_ok(field: str) -> str:
    """Absent, or RFC 3339 text the engine reads as a time (``__us_<field>``, read once in ``c``)."""
    s = _s(field)
    return (f"({_absent(field)} OR ({_t(field)} = 'VARCHAR' AND regexp_full_match({s}, {quote_literal(TS_RE)}) "
            f"AND __us_{field} IS NOT NULL))")


def _us(field: str) -> str:
    return (f"CASE WHEN {_t(field)} = 'VARCHAR' THEN epoch_us(TRY_CAST({_s(field)} "
            "AS TIMESTAMPTZ)) END")


def _some_key(types: str) -> str:
    """One of the paths asked of ``json_type`` exists (a present key has a type, JSON ``null``
    included)."""
    return f"coalesce(list_aggregate({types}, 'count'), 0) > 0"


def _key_paths(keys: list[str], prefix: str = "$") -> list[str]:
    return [f'{prefix}."{k}"' for k in keys]


def _text_ok(expr_type: str, expr: str) -> str:
    """A value Python would read as a channel name: absent, not text, or plain text."""
    return f"({expr_type} IS DISTINCT FROM 'VARCHAR' OR {_plain(expr)})"


def _num(name: str) -> str:
    """A money property's number, from its type and text (``__pt_i``, ``__ps_i``)."""
    i = _PP.index(name) + 1
    return f"CASE WHEN __pt_{i} IN ({_lit(NUM)}) THEN TRY_CAST(__ps_{i} AS DOUBLE) END"


@functools.lru_cache(maxsize=1)
def _catalogue_sql() -> tuple[str, str, str]:
    """Per catalogued event: its properties' checks, the one parse that reads their types, and
    its amount (built once: 20 ms of msgspec introspection)."""
    spec_ok = " ".join(f"WHEN {quote_literal(n)} THEN {surely_valid(s, 'p', lambda i: f'__st[{i}]')}"
                       for n, s in CATALOGUE.items())
    # The catalogued event's properties' types (`__st`), in one parse of them.
    read_p = ("CASE WHEN __type = 'track' THEN CASE __event_in "
              + " ".join(f"WHEN {quote_literal(n)} THEN json_type(p, [{_lit(spec_paths(s))}])" for n, s in CATALOGUE.items())
              + " END END")
    spec_amount = " ".join(f"WHEN {quote_literal(n)} THEN {amount(s, 'p', _num)}" for n, s in CATALOGUE.items())
    return spec_ok, read_p, spec_amount


def _structure(paths) -> str:
    """A ``json_transform`` structure reading each dotted path as its JSON text."""
    tree: dict = {}
    for path in paths:
        node = tree
        *parents, leaf = path.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = "JSON"
    return json.dumps(tree)


def _no_personal_keys(pii_fields: list[str]) -> str:
    """No personal field is a key of ``properties``, ``traits``, ``context`` or
    ``context.traits``. The engine writes each object's text compactly with its keys unescaped,
    so an object whose text holds no ``<field>":`` surely has none; only other objects have
    their keys read (reading them in every object cost 0.1 s per 500 k lines)."""
    if not pii_fields:
        return "true"
    pk = _key_paths(pii_fields)
    raws = {"p": _raw("properties"), "tr": _raw("traits"), "ctx": _raw("context")}
    out = []
    for obj, paths in (("p", pk), ("tr", pk), ("ctx", pk + _key_paths(pii_fields, "$.traits"))):
        maybe = " OR ".join(f"contains({raws[obj]}, {quote_literal(json.dumps(k, ensure_ascii=False)[1:] + ':')})"
                            for k in pii_fields)
        # A CASE, so that only those objects are parsed (an OR evaluates both sides on every row).
        out.append(f"CASE WHEN {maybe} THEN NOT {_some_key(f'json_type({obj}, [{_lit(paths)}])')} ELSE true END")
    return " AND ".join(out)


# A number the parser's JSON reader refuses as out of range (beyond ±1.8e308) has an exponent of
# three digits or more, or a run of a hundred digits or more (fewer digits and an exponent of at
# most 99 stay below 1e199). Negative exponents only round towards 0, which the parser accepts too.
HUGE_NUMBER_RE = r"[0-9][eE]\+?[0-9]{3}|[0-9]{100}"


def _no_huge_numbers() -> str:
    """No object holds a number beyond ±1.8e308, which DuckDB reads as infinity and the parser
    rejects. The engine writes numbers in range in its own shortest form but keeps one out of
    range as sent, so the objects' text is screened as the engine wrote it; the parser skips
    unknown top-level fields without reading their numbers, so only the objects it reads are.
    Lines that match go to the parser, which decides (a three-digit exponent in range, such as
    1.5e308, too)."""
    # One match over the objects' texts end to end (each starts with `{` and ends with `}`, so no
    # number spans two): 0.26 CPU-s per 500 k lines on the benchmark's file, 0.29 one by one.
    return f"NOT regexp_matches(concat({', '.join(_raw(f) for f in _OBJECTS)}), {quote_literal(HUGE_NUMBER_RE)})"


def select_sql(lines: str, *, source: str, base_currency: str, now_us: int, pii_fields: list[str]) -> str:
    """One row per non-blank line of ``lines`` (a relation of ``__row``, the line number, and
    ``line``; see :func:`numbered`): the log layout, ``__fast`` and the raw ``line``."""
    base = quote_literal(base_currency.upper())
    cat_names = _lit(CATALOGUE)
    years_ok = "__fast AND " + " AND ".join(f"coalesce({in_years(t)}, true)"
                                            for t in ("__event_us", "__orig", "__sent", "__received"))
    spec_ok, read_p, spec_amount = _catalogue_sql()
    libs = " ".join(f"WHEN starts_with(lower(__cs_2), {quote_literal(h)}) THEN {quote_literal(c)}" for h, c in _LIBS)
    typ = f"lower({_s('type')})"
    cur = "__ps_4"
    return f"""
WITH r AS (SELECT __row, line FROM {lines} WHERE line IS NOT NULL AND (starts_with(line, '{{') OR trim(line, {_BLANK}) <> '')),
-- One parse reads every top-level field as its JSON text and, by failing (TRY), says the line is
-- not JSON. Valid JSON whose first character past JSON whitespace is `{{` is an object (an array
-- reads as all fields absent); each field's type and text come from its JSON text (j3).
j AS (SELECT __row, line, TRY(json_transform(line, {quote_literal(_STRUCTURE)})) AS __v FROM r),
j2 AS (
  SELECT __row, line, __v IS NOT NULL AND (starts_with(line, '{{') OR starts_with(ltrim(line, ' ' || chr(9)), '{{'))
         AS __obj, {", ".join(f"CAST(__v.{quote_ident(f)} AS VARCHAR) AS __r_{i}" for f, i in _T.items())}
  FROM j
),
j3 AS (SELECT *, {", ".join(f"{_type_of(_raw(f))} AS __t_{i}" for f, i in _T.items())},
                 {", ".join(f"{_text_of(_raw(f))} AS __s_{i}" for f, i in _S.items())} FROM j2),
k AS (
  SELECT *,
    {typ} AS __type,
    CASE WHEN {_t('properties')} = 'OBJECT' THEN CAST({_raw('properties')} AS JSON) ELSE CAST('{{}}' AS JSON) END AS p,
    CASE WHEN {_t('context')} = 'OBJECT' THEN CAST({_raw('context')} AS JSON) END AS ctx,
    CASE WHEN {_t('traits')} = 'OBJECT' THEN CAST({_raw('traits')} AS JSON) END AS tr,
    {_top_id('userId')} AS __user_id,
    {_top_id('anonymousId')} AS __anonymous_id,
    {_s('event')} AS __event_in,
    {_s('name')} AS __name_in
  FROM j3
),
c AS (
  SELECT *,
    CASE WHEN __type = 'track' THEN __event_in WHEN __type IN ('page', 'screen') THEN nullif(__name_in, '') END AS __event,
    {read_p} AS __st,
    json_transform(p, {quote_literal(_structure(_PP))}) AS __pv,
    json_transform(ctx, {quote_literal(_structure(_CP))}) AS __cv,
    {_us('receivedAt')} AS __us_receivedAt, {_us('sentAt')} AS __us_sentAt,
    {_us('timestamp')} AS __us_timestamp, {_us('originalTimestamp')} AS __us_originalTimestamp
  FROM k
),
c2 AS (SELECT *, coalesce(__us_timestamp, __us_originalTimestamp) AS __orig, __us_receivedAt AS __recv,
           __us_sentAt AS __sent,
           {", ".join(f"CAST(__pv.{quote_ident(k)} AS VARCHAR) AS __pr_{i}" for i, k in enumerate(_PP, 1))},
           {", ".join(f"CAST(__cv.{'.'.join(map(quote_ident, k.split('.')))} AS VARCHAR) AS __cr_{i}"
                      for i, k in enumerate(_CP, 1))} FROM c),
-- Each property and context field's type and text, from its JSON text (one parse of each
-- object read them all, where json_type and json_extract_string parsed it twice).
c3 AS (SELECT *,
           {", ".join(f"{_type_of(f'__pr_{i}')} AS __pt_{i}, {_text_of(f'__pr_{i}')} AS __ps_{i}" for i in range(1, len(_PP) + 1))},
           {", ".join(f"{_type_of(f'__cr_{i}')} AS __ct_{i}, {_text_of(f'__cr_{i}')} AS __cs_{i}" for i in range(1, len(_CP) + 1))}
       FROM c2),
f AS (
  SELECT *,
    __obj
    AND {_t('type')} = 'VARCHAR' AND __type IN ({_lit(CALL_TYPES)})
    AND {_top_id('messageId')} IS NOT NULL
    AND {_id_ok('messageId')} AND {_id_ok('userId')} AND {_id_ok('anonymousId')}
    AND {_id_ok('groupId')} AND {_id_ok('previousId')}
    AND (__user_id IS NOT NULL OR __anonymous_id IS NOT NULL)
    AND ({_absent('event')} OR {_t('event')} = 'VARCHAR') AND ({_absent('name')} OR {_t('name')} = 'VARCHAR')
    AND ({_absent('category')} OR ({_t('category')} = 'VARCHAR' AND __type <> 'page'))
    AND ({_absent('channel')} OR ({_t('channel')} = 'VARCHAR' AND {_plain(_s('channel'))}))
    AND ({_absent('writeKey')} OR {_t('writeKey')} = 'VARCHAR')
    AND ({_absent('properties')} OR {_t('properties')} = 'OBJECT')
    AND ({_absent('traits')} OR {_t('traits')} = 'OBJECT')
    AND ({_absent('context')} OR {_t('context')} = 'OBJECT')
    AND ({_absent('integrations')} OR {_t('integrations')} = 'OBJECT')
    AND {_ts_ok('timestamp')} AND {_ts_ok('originalTimestamp')} AND {_ts_ok('sentAt')} AND {_ts_ok('receivedAt')}
    AND (__type <> 'track' OR (__event_in IS NOT NULL AND {_plain('__event_in')}))
    AND (__type NOT IN ('page', 'screen') OR __name_in IS NULL OR __name_in = '' OR {_plain('__name_in')})
    AND (__type <> 'alias' OR ({_s('previousId')} <> '' AND __user_id IS NOT NULL))
    AND (__type <> 'group' OR {_s('groupId')} <> '')
    AND {_no_personal_keys(pii_fields)}
    AND {_text_ok("__ct_1", "__cs_1")}
    AND {_text_ok("__pt_1", "__ps_1")}
    AND coalesce(__pt_2 IN {_ID_TYPES}, true)
    AND coalesce(__pt_3 IN {_ID_TYPES}, true)
    AND (__pt_2 IS DISTINCT FROM 'VARCHAR' OR __ps_2 = '' OR {_plain("__ps_2")})
    AND (__pt_3 IS DISTINCT FROM 'VARCHAR' OR __ps_3 = '' OR {_plain("__ps_3")})
    AND (__pt_4 IS DISTINCT FROM 'VARCHAR' OR regexp_full_match({cur}, '^[A-Za-z]{{3}}$'))
    AND (__type <> 'track' OR CASE __event {spec_ok} ELSE true END)
    -- DuckDB's JSON reader also takes trailing commas and NaN/Infinity, which the parser
    -- rejects as malformed: lines that may hold them are left to it ("banana" too).
    AND NOT regexp_matches(line, ',\\s*[\\]}}]')
    AND NOT (line ILIKE '%nan%' OR line ILIKE '%inf%')    -- lower() and contains: 0.26 CPU-s per 500 k lines, this 0.19
    AND {_no_huge_numbers()}
    AS __fast,
    CASE WHEN __type = 'track' THEN CASE __event {spec_amount} ELSE {amount(None, 'p', _num)} END
         ELSE {amount(None, 'p', _num)} END AS __amount,
    CASE WHEN __pt_4 = 'VARCHAR' THEN {cur} END AS __currency,
    coalesce(__recv, {int(now_us)}) AS __received,
    CASE WHEN __type = 'track' AND __event IN ({cat_names}) THEN __event END AS __spec
  FROM c3
),
g AS (
  SELECT *,
    CASE WHEN __orig IS NULL THEN __received
         WHEN __recv IS NOT NULL AND __sent IS NOT NULL THEN __orig + (__received - __sent)
         ELSE __orig END AS __event_us,
    coalesce(
      {explicit_channel(_s('channel'))},
      CASE WHEN __ct_1 = 'VARCHAR' THEN {explicit_channel("__cs_1")} END,
      CASE WHEN __pt_1 = 'VARCHAR' THEN {explicit_channel("__ps_1")} END,
      {catalogue_channel("__spec")},
      CASE WHEN __pt_3 IS NOT NULL
                AND NOT (__pt_3 = 'VARCHAR' AND __ps_3 = '') THEN 'store' END,
      CASE WHEN __ct_2 = 'VARCHAR' THEN CASE {libs} END END,
      CASE __type WHEN 'page' THEN 'web' WHEN 'screen' THEN 'app' END,
      'other') AS __channel
  FROM f
),
-- Times outside the log's years go to the parser, which names them (see contract.EARLIEST_US).
h AS (SELECT * REPLACE ({years_ok} AS __fast) FROM g)
SELECT
  {_top_id('messageId')} AS message_id,
  __type AS type, __event AS event,
  CASE WHEN __spec IS NOT NULL THEN '1-0-0' END AS schema_version,
  __channel AS channel, {quote_literal(source)} AS source,
  __anonymous_id AS anonymous_id, __user_id AS user_id,
  {_top_id('groupId')} AS group_id, {_top_id('previousId')} AS previous_id,
  {utc_time('__event_us')} AS event_time,
  {utc_time('__orig')} AS original_time,
  {utc_time('__sent')} AS sent_at,
  {utc_time('__received')} AS received_at,
  {utc_day('__event_us')} AS day,
  CASE WHEN __spec IS NULL OR __spec IN ({_lit(n for n, s in CATALOGUE.items() if "order_id" in s.schema.__struct_fields__)})
       THEN CASE WHEN __pt_2 IN {_ID_TYPES} THEN nullif(__ps_2, '') END END AS order_id,
  CASE WHEN __pt_3 IN {_ID_TYPES} THEN nullif(__ps_3, '') END AS store_id,
  __amount AS amount,
  CASE WHEN __amount IS NOT NULL THEN upper(coalesce(__currency, {base})) ELSE __currency END AS currency,
  nullif(CAST(p AS VARCHAR), '{{}}') AS properties,
  nullif(CAST(tr AS VARCHAR), '{{}}') AS traits,
  nullif(CAST(ctx AS VARCHAR), '{{}}') AS context,
  CASE WHEN __user_id IS NOT NULL THEN 'user_id:' || __user_id ELSE 'anonymous_id:' || __anonymous_id END AS subject,
  CAST(NULL AS BLOB) AS pii,
  coalesce(__fast, false) AS __fast, __row,
  CASE WHEN __fast THEN NULL ELSE line END AS line    -- kept for the parser only (a copy of every line cost ~0.1 s)
FROM h
"""


def lines_sql(path: str) -> str:
    """The file's lines in order, for a table whose ``rowid`` then numbers them from 0 (see
    :func:`numbered`). DuckDB keeps a parallel scan's order when it stores it (insertion order is
    preserved by default), so no window is needed: ``row_number()`` ran on one thread and took
    0.15–0.18 s for 500 k lines against 0.09–0.11 s for this (the test suite checks the numbers)."""
    return f"SELECT line FROM {reader_sql(path)}"


def numbered(table: str, start: int, stop: int, pieces: int = 1) -> str:
    """``__row`` (the line number, from 1) and ``line`` of a table made from :func:`lines_sql`,
    for the lines after ``start`` up to ``stop``, read as ``pieces`` ranges joined by ``UNION
    ALL``. DuckDB scans a table on one thread per row group (122,880 rows), so a file of fewer
    than two was normalised on one core; ranges read side by side (under
    :meth:`~plait.engine.backend.Backend.unordered`) use them all."""
    pieces = max(1, min(pieces, (stop - start) // 2))
    cuts = [start + (stop - start) * i // pieces for i in range(pieces + 1)]
    return "(" + " UNION ALL ".join(f"SELECT rowid + 1 AS __row, line FROM {table} WHERE rowid >= {a} AND rowid < {b}"
                                    for a, b in itertools.pairwise(cuts)) + ")"


def reader_sql(path: str) -> str:
    """Read a JSONL file as one text column, one row per line (blank lines included)."""
    return (f"read_csv({quote_literal(path)}, columns = {{'line': 'VARCHAR'}}, header = false, delim = '\x1f', "
            "quote = '', escape = '', auto_detect = false, strict_mode = false, new_line = '\\n')")
