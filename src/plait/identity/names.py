"""Personal-data clean-up for matching: nicknames, names, addresses, dates.

The nickname table maps common English diminutives to one formal name so that
"Bob" and "Robert" compare equal. It is a small, hand-kept list (public nickname
datasets such as carltonnorthern/nicknames are larger but are data we may not ship);
users add their own through ``identity.match`` settings later.

>>> canonical_first("Bobby"), canonical_first("ROBERT"), canonical_first("Zed")
('robert', 'robert', 'zed')
>>> clean_postcode("sw1a 1aa")
'SW1A1AA'
"""

from __future__ import annotations

import re
from typing import Any

_GROUPS = {
    "alexander": "alex al xander sandy", "alexandra": "alex lexi sandra sandy", "andrew": "andy drew",
    "anthony": "tony ant", "barbara": "barb babs", "benjamin": "ben benny benji", "catherine": "cathy kate katie cat",
    "charles": "charlie chuck chas", "christopher": "chris kit topher", "christine": "chris chrissy tina",
    "daniel": "dan danny", "david": "dave davey", "deborah": "deb debbie", "donald": "don donny",
    "edward": "ed eddie ted ned", "elizabeth": "liz lizzie beth betty eliza libby", "emily": "em emmy",
    "frederick": "fred freddie", "gregory": "greg", "henry": "harry hank", "jacob": "jake",
    "james": "jim jimmy jamie", "jennifer": "jen jenny", "jessica": "jess jessie", "john": "johnny jack",
    "jonathan": "jon jonny", "joseph": "joe joey", "joshua": "josh", "katherine": "kate kathy katie kat",
    "kenneth": "ken kenny", "kevin": "kev", "lawrence": "larry laurie", "margaret": "maggie meg peggy marge",
    "matthew": "matt matty", "michael": "mike mick mikey", "michelle": "shelly", "nicholas": "nick nicky",
    "olivia": "liv livvy", "oliver": "ollie", "patricia": "pat patty trish", "patrick": "pat paddy",
    "peter": "pete", "philip": "phil", "rebecca": "becky becca", "richard": "rick dick rich ricky",
    "robert": "bob bobby rob robbie bert", "ronald": "ron ronnie", "samuel": "sam sammy", "samantha": "sam sammy",
    "sophia": "sophie", "stephen": "steve stevie", "steven": "steve stevie", "susan": "sue susie",
    "thomas": "tom tommy", "timothy": "tim timmy", "victoria": "vicky tori", "william": "bill billy will willie liam",
    "zachary": "zach zack",
}
# Where one nickname belongs to several names (pat, sam, steve) the first listed wins;
# matching still compares the raw names too, so nothing is lost.
NICKNAMES: dict[str, str] = {}
for _formal, _nicks in _GROUPS.items():
    for _n in _nicks.split():
        NICKNAMES.setdefault(_n, _formal)

_SPACES = re.compile(r"\s+")


def clean_text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    v = _SPACES.sub(" ", str(value)).strip().lower()
    return v or None


def canonical_first(value: Any) -> str | None:
    v = clean_text(value)
    return None if v is None else NICKNAMES.get(v, v)


def clean_postcode(value: Any) -> str | None:
    v = clean_text(value)
    return None if v is None else v.replace(" ", "").upper()


def clean_date(value: Any) -> str | None:
    """ISO ``YYYY-MM-DD`` when the value starts with one, else the trimmed text."""
    v = clean_text(value)
    if v is None:
        return None
    m = re.match(r"(\d{4})-(\d{1,2})-(\d{1,2})", v)
    return f"{m.group(1)}-{int(m.group(2)):02d}-{int(m.group(3)):02d}" if m else v


__all__ = ["NICKNAMES", "canonical_first", "clean_date", "clean_postcode", "clean_text"]
