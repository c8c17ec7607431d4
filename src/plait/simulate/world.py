"""The simulated retailer's world: people, identifiers, products, stores, campaigns, weather.

Everything is drawn from one ``numpy`` generator, so a seed gives the same world.
People carry latent traits (activity, price sensitivity, channel preference,
category tastes, churn hazard, return propensity); each holds several identifiers
spread over systems, and each system holds its own, imperfect copy of their
personal data (typos, nicknames, swapped names, old addresses, missing values,
shared family devices) — the mess identity resolution has to undo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np

FIRST = ["James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "William", "Elizabeth",
         "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Charles", "Karen",
         "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Margaret", "Mark", "Sandra", "Steven", "Ashley",
         "Andrew", "Emily", "Joshua", "Donna", "Kenneth", "Michelle", "Kevin", "Carol", "Brian", "Amanda",
         "Olivia", "Noah", "Emma", "Liam", "Sophia", "Lucas", "Mia", "Ethan", "Chloe", "Oliver"]
NICK = {"James": "Jim", "Robert": "Bob", "William": "Bill", "Elizabeth": "Liz", "Richard": "Dick",
        "Joseph": "Joe", "Thomas": "Tom", "Charles": "Charlie", "Daniel": "Dan", "Matthew": "Matt",
        "Anthony": "Tony", "Margaret": "Maggie", "Steven": "Steve", "Andrew": "Andy", "Joshua": "Josh",
        "Kenneth": "Ken", "Michael": "Mike", "Jennifer": "Jen", "Patricia": "Pat", "Jessica": "Jess",
        "Susan": "Sue", "Kevin": "Kev", "Olivia": "Liv", "Sophia": "Sophie", "Oliver": "Ollie", "David": "Dave"}
LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
        "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
        "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
        "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
        "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts"]
# Beyond the common surnames, a long tail like a real population's: most people share their
# surname with few others (a world of 50 equally common surnames would make everyone a Smith).
_PREFIX = ["Ash", "Black", "Brad", "Brook", "Burn", "Cald", "Chester", "Cliff", "Craw", "Dal", "Dun", "Ed", "Fair",
           "Fern", "Gold", "Hal", "Hart", "Hay", "Hol", "Kings", "Lang", "Mar", "Mid", "Nor", "Oak", "Pen", "Rad",
           "Red", "Ros", "Sand", "Shel", "Stan", "Stock", "Sut", "Thorn", "Wal", "Wes", "Whit", "Wood", "Yar"]
_SUFFIX = ["ley", "ton", "wood", "ford", "field", "well", "worth", "by", "ham", "more", "cliffe", "wick", "stone",
           "land", "bury", "dale", "shaw", "combe", "hurst", "bridge"]
SURNAMES = LAST + [p + s for p in _PREFIX for s in _SUFFIX]
# Frequency falls with rank like surname tables do: the most common ≈ 1 %, the top 50 ≈ a quarter.
SURNAME_WEIGHTS = 1.0 / (np.arange(len(SURNAMES)) + 20.0)
SURNAME_WEIGHTS /= SURNAME_WEIGHTS.sum()
STREETS = ["High St", "Station Rd", "Main St", "Church Ln", "Park Ave", "Mill Rd", "Victoria Rd", "Green Ln",
           "Manor Rd", "Kings Rd", "Queens Rd", "New St", "London Rd", "York Rd", "Oak Ave", "Elm Grove"]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "proton.me"]
DEPARTMENTS = {
    "Food": ["Bakery", "Dairy", "Produce", "Snacks", "Beverages"],
    "Home": ["Kitchen", "Cleaning", "Garden"],
    "Fashion": ["Womenswear", "Menswear", "Kidswear", "Footwear"],
    "Beauty": ["Skincare", "Haircare"],
    "Electronics": ["Phones", "Audio"],
}
CAMPAIGN_CHANNELS = ["email", "sms", "push", "social", "search", "display", "geofence"]


@dataclass
class World:
    """The latent truth the simulator draws events from (arrays indexed by person)."""

    seed: int
    start: date
    days: int
    n: int
    activity: np.ndarray
    price_sensitivity: np.ndarray
    channel_pref: np.ndarray          # (n, 3): web, app, store
    taste: np.ndarray                 # (n, categories)
    churn_day: np.ndarray             # day index the person stops buying (>= days: never)
    return_rate: np.ndarray
    complaint_rate: np.ndarray
    home_store: np.ndarray
    household: np.ndarray             # people sharing a household share a family computer
    first: list[str]
    last: list[str]
    birthday: list[str]
    email: list[str]
    phone: np.ndarray                 # national significant numbers (int64)
    street: list[str]
    old_street: list[str]
    postcode: list[str]
    city: list[str]
    registered: np.ndarray            # has a web login
    app_user: np.ndarray
    card: np.ndarray                  # has a loyalty card
    pos_customer: np.ndarray          # known to the POS system by customer number
    newsletter: np.ndarray
    products: dict[str, np.ndarray] = field(default_factory=dict)
    categories: list[str] = field(default_factory=list)
    category_department: list[str] = field(default_factory=list)
    copurchase: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), int))
    stores: dict[str, np.ndarray] = field(default_factory=dict)
    campaigns: dict[str, np.ndarray] = field(default_factory=dict)
    weather: dict[str, np.ndarray] = field(default_factory=dict)
    local_events: dict[str, np.ndarray] = field(default_factory=dict)

    # -- identifiers (one function per system, so truth and events agree) --------------------
    def user_id(self, p: np.ndarray) -> np.ndarray:
        return np.char.add("web-", p.astype(str))

    def cookie(self, p: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Browser cookie ``k`` (0..2) of person ``p``; family members share cookie 0 of the household head."""
        owner = np.where((k == 0) & (self.household[p] >= 0), self.household[p], p)
        return np.char.add(np.char.add("ck-", owner.astype(str)), np.char.add("-", k.astype(str)))

    def device(self, p: np.ndarray) -> np.ndarray:
        return np.char.add("dev-", p.astype(str))

    def card_no(self, p: np.ndarray) -> np.ndarray:
        return np.char.add("LC", (40_000_000 + p * 7 + 3).astype(str))

    def pos_no(self, p: np.ndarray) -> np.ndarray:
        return np.char.add("POS", (100_000 + p * 3).astype(str))

    def esp_id(self, p: np.ndarray) -> np.ndarray:
        return np.char.add("esp-", p.astype(str))


def _pick(rng: np.random.Generator, items: list[str], n: int) -> np.ndarray:
    return np.asarray(items, dtype=object)[rng.integers(0, len(items), n)]


def build_world(n: int, days: int, start: date, seed: int, n_products: int = 400, n_stores: int = 12) -> World:
    rng = np.random.default_rng(seed)
    activity = rng.gamma(0.9, 0.06, n)                         # occasions per day
    price_sensitivity = rng.beta(2, 3, n)
    channel_pref = rng.dirichlet([1.2, 0.8, 1.5], n)
    categories = [c for cats in DEPARTMENTS.values() for c in cats]
    category_department = [d for d, cats in DEPARTMENTS.items() for _ in cats]
    taste = rng.dirichlet(np.full(len(categories), 0.5), n)
    churn_day = np.where(rng.random(n) < 0.35, rng.integers(30, max(31, days * 2), n), 10 ** 6)
    return_rate = rng.beta(1, 12, n)
    complaint_rate = rng.beta(1, 40, n)
    home_store = rng.integers(0, n_stores, n)
    # ~8% of people live with a household head and share the family computer's cookie.
    household = np.full(n, -1)
    sharers = np.flatnonzero(rng.random(n) < 0.08)
    household[sharers] = np.maximum(sharers - rng.integers(1, 4, sharers.size), 0)
    first = _pick(rng, FIRST, n)
    last = np.asarray(SURNAMES, dtype=object)[rng.choice(len(SURNAMES), n, p=SURNAME_WEIGHTS)]
    years = rng.integers(1945, 2006, n)
    bday = [f"{y}-{m:02d}-{d:02d}" for y, m, d in zip(years, rng.integers(1, 13, n), rng.integers(1, 29, n))]
    local = np.char.lower((first.astype(str)))
    sep = _pick(rng, [".", "_", ""], n)
    email = [f"{f}{s}{l.lower()}{i % 97 if i % 3 == 0 else ''}@{d}" for i, (f, s, l, d) in
             enumerate(zip(local, sep, last, _pick(rng, DOMAINS, n)))]
    email = _unique_mailboxes(email)
    phone = 7_700_000_000 + rng.permutation(n) * 37 + 11
    nums = rng.integers(1, 200, n)
    street = [f"{a} {s}" for a, s in zip(nums, _pick(rng, STREETS, n))]
    old_street = [f"{a} {s}" for a, s in zip(rng.integers(1, 200, n), _pick(rng, STREETS, n))]
    cities = ["London", "Leeds", "Bristol", "Manchester", "Glasgow", "Cardiff", "Norwich", "York"]
    city = _pick(rng, cities, n)
    postcode = [f"{c[:2].upper()}{rng_d} {rng_e}AB"[:8] for c, rng_d, rng_e in
                zip(city, rng.integers(1, 30, n), rng.integers(1, 10, n))]
    w = World(
        seed=seed, start=start, days=days, n=n, activity=activity, price_sensitivity=price_sensitivity,
        channel_pref=channel_pref, taste=taste, churn_day=churn_day, return_rate=return_rate,
        complaint_rate=complaint_rate, home_store=home_store, household=household,
        first=list(first), last=list(last), birthday=bday, email=email, phone=phone, street=street,
        old_street=old_street, postcode=postcode, city=list(city),
        registered=rng.random(n) < 0.6, app_user=rng.random(n) < 0.35, card=rng.random(n) < 0.5,
        pos_customer=rng.random(n) < 0.4, newsletter=rng.random(n) < 0.55,
        categories=categories, category_department=category_department,
    )
    # Products: a category each, a log-normal price, and planted co-purchase pairs.
    cat = rng.integers(0, len(categories), n_products)
    price = np.round(np.exp(rng.normal(2.3, 0.8, n_products)), 2)
    w.products = {"category": cat, "price": price, "popularity": rng.pareto(1.5, n_products) + 1}
    a = rng.choice(n_products, 30, replace=False)
    b = rng.choice(np.setdiff1d(np.arange(n_products), a), 30, replace=False)
    w.copurchase = np.stack([a, b], axis=1)
    # Stores: points around a few cities.
    w.stores = {"lat": 51.5 + rng.normal(0, 1.2, n_stores), "lon": -1.0 + rng.normal(0, 1.2, n_stores),
                "region": rng.integers(0, 4, n_stores)}
    # Weather: per region and day; rain moves shopping online.
    w.weather = {"rain": rng.random((4, days)) < 0.3, "temp": 10 + 8 * np.sin(np.arange(days) / 58.0)
                 + rng.normal(0, 3, (4, days))}
    # Local events near a store lift its visits on the day.
    k = max(1, days // 20)
    w.local_events = {"store": rng.integers(0, n_stores, k), "day": rng.integers(0, days, k),
                      "lift": rng.uniform(1.5, 3.0, k)}
    # Campaigns: a channel, a send day, a true causal lift on buying in a window, a holdout share.
    # Every channel runs at least one campaign.
    n_c = max(len(CAMPAIGN_CHANNELS), days // 10)
    w.campaigns = {
        "channel": np.array(CAMPAIGN_CHANNELS)[rng.permutation(n_c) % len(CAMPAIGN_CHANNELS)],
        "day": np.sort(rng.integers(0, days, n_c)),
        "reach": rng.uniform(0.1, 0.5, n_c),
        "lift": np.round(rng.choice([0.0, 0.1, 0.25, 0.5, 1.0], n_c), 2),
        "window": rng.integers(3, 10, n_c),
        "holdout": np.full(n_c, 0.1),
    }
    return w


def _unique_mailboxes(emails: list[str]) -> list[str]:
    """One mailbox per person: providers ignore separators and case, so ``ann.lee`` and
    ``annlee`` at one domain would be the same inbox; later holders get a number."""
    seen: set[str] = set()
    out = []
    for e in emails:
        local, domain = e.split("@")
        base, k = local, 1
        while (local.replace(".", "").replace("_", ""), domain) in seen:
            k += 1
            local = f"{base}{k}"
        seen.add((local.replace(".", "").replace("_", ""), domain))
        out.append(f"{local}@{domain}")
    return out


def typo(rng: np.random.Generator, s: str) -> str:
    """One keyboard slip: a dropped, doubled or swapped letter."""
    if len(s) < 3:
        return s
    i = int(rng.integers(1, len(s) - 1))
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return s[:i] + s[i + 1:]
    if kind == 1:
        return s[:i] + s[i] + s[i:]
    return s[:i - 1] + s[i] + s[i - 1] + s[i + 1:]
