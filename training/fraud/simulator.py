"""Seeded simulator of credit-card transactions for fraud scoring. THIS IS SIMULATED DATA.

Nothing here comes from real cardholders. The generator is meant to be honest rather than easy: a
good model does well but not perfectly, because fraud and legitimate traffic overlap on purpose,
part of the fraud is indistinguishable from normal spending, and the labels are noisy. Several
signals only work in combination (hour is fraud-heavy around midnight, i.e. at both ends of its
0-23 range; tiny amounts are suspicious for one pattern and large ones for others), so a tree
ensemble beats a linear model. Everything is vectorised numpy (no per-row Python loops);
500,000 rows take about a second. The same ``seed`` gives the same frame, another seed another.

Generative story
----------------
*Customers* (one card each, ``max(10, n_rows // 50)`` of them) get a profile:

- spend level: log-normal, median ~35 (currency units), sigma 0.7, so some are big spenders;
- activity: gamma(2) weight, how many of the legitimate transactions are theirs;
- category mix: a Dirichlet draw around a population mix (grocery and restaurants common,
  jewelry rare);
- travel propensity: beta(0.8, 12) (mean ~6%), the share of their purchases made travelling;
- home area: urban (60%), rural (30%, longer local distances) or border (10%, where ~15% of
  local shopping is at foreign merchants);
- account age at the start: 10% young accounts (0-90 days), the rest log-normal around ~3 years;
- device: 30% switch to a new phone during the period.

*Legitimate transactions* (``n_rows - round(fraud_rate * n_rows)`` rows) fall on a uniform day of
90. A merchant category is drawn from the customer's mix (from a travel mix when travelling);
the hour from a category-specific daily curve (breakfast, lunch and dinner peaks, fuel early in
the morning, digital goods and online shopping in the evening with a night tail, ATMs at any
hour); the amount is spend level x category multiplier x log-normal noise (x1.4 when
travelling), with 1.5% one-off big purchases (x3-x10). ATM amounts are multiples of 20. Online
retail and digital goods are card-not-present (CNP), as are 60% of travel bookings and ~3% of
other purchases (phone orders).

``distance_from_home_km`` is the merchant's distance for card-present purchases (a few km, more
for rural customers; hundreds of km on domestic trips, thousands abroad, where 45% of travel
spending is at foreign merchants) and the IP geolocation of the purchasing device for CNP ones
(the cardholder's device: near home, 12% far away on mobile data or VPN). 7% of legitimate CNP
purchases are at foreign web shops. ``new_device=1`` marks a device or wallet not seen with the
card before: legitimately for 3 days after a phone switch, plus 1% of card-present and 6% of CNP
purchases (new laptop, cleared cookies, a partner's phone).

8% of legitimate rows come in *legitimate bursts* of 2-8 transactions minutes apart: errands
(fuel, grocery, restaurants, entertainment, pharmacy; card present; 60% of bursts) and in-app /
game purchases (small CNP digital goods at app-store price points, evening and night; 40%).

*Fraud* (exactly ``round(fraud_rate * n_rows)`` rows) hits randomly chosen victim cards in four
patterns, by share of fraud rows:

- ``card_testing`` (35%): bursts of 2-10 tiny charges (40% round 0.50/1/2/5, else 0.30-9.00),
  CNP, 55% online retail / 45% digital goods, around midnight; 70% of bursts are fast (~45 s
  apart), 30% slow (~20 min apart, so ``txn_count_1h`` stays low); 20% of bursts end with a
  cash-out purchase (median ~150, electronics / online retail / digital goods). Half come from
  a new device, 30% at foreign merchants, the device mostly far away (25% via a proxy near the
  victim).
- ``account_takeover`` (27%): 1-3 purchases ~40 minutes apart, amounts ~6x the customer's
  expected amount (log-normal), electronics / online retail / gift cards (digital goods) /
  travel / jewelry / retail, 85% CNP, 80% from a new device, around midnight, 60% via a proxy
  near the victim, 15% foreign.
- ``high_value_foreign`` (23%): 1-2 large purchases (median ~700, at least 3x the customer's
  expected amount) at electronics / jewelry / retail / travel (a few restaurants,
  entertainment), 85% foreign and thousands of km away, 75% card present (skimmed or counterfeit
  cards, no device: new_device 2%; CNP ones 50%), any hour.
- ``mimic`` (15%): drawn exactly like the victim's own legitimate purchases, so this share of
  the fraud is undetectable from the features.

Overlap on purpose: legitimate travellers (foreign, far away, big travel and shopping amounts),
legitimate big spenders and big one-off purchases, new-phone and new-device use, legitimate
bursts (including tiny digital purchases late at night), young legitimate accounts, border-area
customers shopping abroad, legitimate CNP purchases from far away (VPN / mobile).

*History features* are computed from the simulated rows of the same card, as a feature store
would: ``txn_count_1h`` / ``txn_count_24h`` count the card's earlier transactions in the previous
hour / day (fraud included, the current one excluded), and ``avg_amount_30d`` is the mean amount
of the card's earlier transactions in the previous 30 days, shrunk towards the customer's
expected amount with a weight of 3 transactions (standing in for history before the simulated
window). ``account_age_days`` grows with the date; ``hour`` is the hour of ``timestamp``.

*Label noise*: 5% of fraud rows are labelled ``is_fraud=0`` (never reported) and 0.05% of
legitimate rows are labelled 1 (friendly-fraud disputes). ``fraud_pattern`` keeps the true
generating pattern (``none`` for legitimate rows, noisy labels included); it is for analysis
only and must never be used as a feature. The observed label rate is therefore about
``0.95 * fraud_rate + 0.0005``.

Limits: the process is stationary over the 90 days (no drift), every card belongs to one
customer, a compromised card is not blocked after fraud, there is no merchant identity and the
hour is the cardholder's home time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.features import MERCHANT_CATEGORIES

__all__ = ["FRAUD_PATTERNS", "simulate_transactions"]

FRAUD_PATTERNS: tuple[str, ...] = (
    "none",
    "card_testing",
    "account_takeover",
    "high_value_foreign",
    "mimic",
)
"""Values of the ``fraud_pattern`` column; index 0 is legitimate traffic."""

_NONE, _CARD_TESTING, _TAKEOVER, _FOREIGN, _MIMIC = range(len(FRAUD_PATTERNS))

# Shares of fraud rows per pattern (mimic takes the remainder).
_PATTERN_SHARES = {_CARD_TESTING: 0.35, _TAKEOVER: 0.27, _FOREIGN: 0.23}

_N_DAYS = 90
_DAY = 86_400.0
_HOUR = 3_600.0
_ROWS_PER_CUSTOMER = 50
_LEGIT_BURST_SHARE = 0.08
_UNREPORTED_FRAUD = 0.05
_FRIENDLY_FRAUD = 0.0005
_HISTORY_PRIOR_WEIGHT = 3.0
_MAX_DISTANCE_KM = 20_000.0  # no place on Earth is further than ~20,037 km away

_CAT = {name: index for index, name in enumerate(MERCHANT_CATEGORIES)}
_N_CAT = len(MERCHANT_CATEGORIES)


def _mix(weights: dict[str, float]) -> np.ndarray:
    """Probability vector over merchant categories from a {category: weight} dict."""
    vector = np.zeros(_N_CAT)
    for name, weight in weights.items():
        vector[_CAT[name]] = weight
    return vector / vector.sum()


_POPULATION_MIX = _mix(
    {
        "grocery": 0.20,
        "restaurant": 0.16,
        "fuel": 0.10,
        "retail": 0.12,
        "online_retail": 0.12,
        "travel": 0.025,
        "electronics": 0.045,
        "entertainment": 0.06,
        "pharmacy": 0.05,
        "jewelry": 0.01,
        "digital_goods": 0.06,
        "atm": 0.05,
    }
)
_TRAVEL_MIX = _mix(
    {
        "restaurant": 0.26,
        "travel": 0.18,
        "retail": 0.16,
        "fuel": 0.06,
        "entertainment": 0.10,
        "grocery": 0.05,
        "atm": 0.05,
        "electronics": 0.05,
        "jewelry": 0.03,
        "pharmacy": 0.02,
    }
)
_ERRAND_MIX = _mix(
    {"fuel": 0.25, "grocery": 0.30, "restaurant": 0.20, "entertainment": 0.15, "pharmacy": 0.10}
)
_APP_MIX = _mix({"digital_goods": 0.8, "online_retail": 0.2})
_CARD_TESTING_MIX = _mix({"digital_goods": 0.45, "online_retail": 0.55})
_CASH_OUT_MIX = _mix({"electronics": 0.5, "online_retail": 0.3, "digital_goods": 0.2})
_TAKEOVER_MIX = _mix(
    {
        "electronics": 0.25,
        "online_retail": 0.25,
        "jewelry": 0.08,
        "digital_goods": 0.25,
        "retail": 0.07,
        "travel": 0.10,
    }
)
_FOREIGN_MIX = _mix(
    {
        "jewelry": 0.22,
        "electronics": 0.28,
        "travel": 0.20,
        "retail": 0.20,
        "entertainment": 0.05,
        "restaurant": 0.05,
    }
)


def _by_category(values: dict[str, float]) -> np.ndarray:
    """Array in MERCHANT_CATEGORIES order from a dict that names every category."""
    if set(values) != set(MERCHANT_CATEGORIES):
        raise ValueError(f"categories differ: {sorted(set(MERCHANT_CATEGORIES) ^ set(values))}")
    return np.array([values[name] for name in MERCHANT_CATEGORIES], dtype=np.float64)


# Typical amount relative to the customer's spend level.
_AMOUNT_MULTIPLIER = _by_category(
    {
        "grocery": 1.3,
        "restaurant": 0.9,
        "fuel": 1.2,
        "retail": 1.4,
        "online_retail": 1.3,
        "travel": 7.0,
        "electronics": 4.5,
        "entertainment": 1.0,
        "pharmacy": 0.6,
        "jewelry": 6.0,
        "digital_goods": 0.25,
        "atm": 2.5,
    }
)
_AMOUNT_SIGMA = 0.6
# Probability that a legitimate purchase is card-not-present.
_NOT_PRESENT = _by_category(
    {
        "grocery": 0.03,
        "restaurant": 0.03,
        "fuel": 0.01,
        "retail": 0.03,
        "online_retail": 1.0,
        "travel": 0.6,
        "electronics": 0.05,
        "entertainment": 0.05,
        "pharmacy": 0.02,
        "jewelry": 0.03,
        "digital_goods": 1.0,
        "atm": 0.0,
    }
)


def _daily_curve(floor: float, bumps: list[tuple[float, float, float]]) -> np.ndarray:
    """24 hourly weights: ``floor`` plus circular Gaussian bumps (centre hour, width, height)."""
    hours = np.arange(24) + 0.5
    weights = np.full(24, floor)
    for centre, width, height in bumps:
        gap = np.abs(hours - centre)
        gap = np.minimum(gap, 24 - gap)
        weights += height * np.exp(-0.5 * (gap / width) ** 2)
    return weights / weights.sum()


_CATEGORY_HOURS = np.stack(
    [
        _daily_curve(0.01, [(7.5, 1.2, 0.6), (11, 2.5, 1.0), (18, 2.0, 1.3)]),  # grocery
        _daily_curve(0.005, [(7.5, 1.0, 0.9), (12.5, 1.2, 1.2), (19.5, 1.5, 1.5)]),  # restaurant
        _daily_curve(0.01, [(6.5, 1.2, 1.4), (17, 2.5, 1.0)]),  # fuel
        _daily_curve(0.005, [(14, 3.0, 1.0)]),  # retail
        _daily_curve(0.08, [(13, 3.0, 0.6), (21, 2.5, 1.0)]),  # online_retail
        _daily_curve(0.03, [(10, 3.0, 1.0), (16, 3.0, 0.7)]),  # travel
        _daily_curve(0.005, [(15, 3.0, 1.0)]),  # electronics
        _daily_curve(0.02, [(21, 2.0, 1.0), (15, 2.0, 0.4)]),  # entertainment
        _daily_curve(0.005, [(8, 1.0, 0.6), (11, 2.5, 1.0), (17, 2.0, 0.8)]),  # pharmacy
        _daily_curve(0.005, [(14, 2.5, 1.0)]),  # jewelry
        _daily_curve(0.12, [(21, 3.0, 1.0), (14, 3.0, 0.4), (1, 2.0, 0.3)]),  # digital_goods
        _daily_curve(0.05, [(12, 3.0, 0.8), (19, 3.0, 0.8), (1, 2.0, 0.3)]),  # atm
    ]
)
_CARD_TESTING_HOURS = _daily_curve(0.05, [(0.5, 2.0, 1.5)])
_TAKEOVER_HOURS = _daily_curve(0.15, [(0.0, 2.5, 1.2)])
_FOREIGN_HOURS = _daily_curve(1.0, [])


# --------------------------------------------------------------------------- sampling helpers
def _sample_rows(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One index per row of ``probabilities`` [N, K] (rows sum to 1), by inverse CDF."""
    cdf = np.cumsum(probabilities, axis=1)
    draws = rng.random(len(probabilities)) * cdf[:, -1]
    return np.minimum((draws[:, None] >= cdf).sum(axis=1), probabilities.shape[1] - 1)


def _sample_categories(rng: np.random.Generator, mix: np.ndarray, n: int) -> np.ndarray:
    """``n`` category indices drawn from one probability vector."""
    return rng.choice(_N_CAT, size=n, p=mix)


def _lognormal(
    rng: np.random.Generator, median: float | np.ndarray, sigma: float, n: int
) -> np.ndarray:
    """``n`` log-normal draws with the given median(s) and log-scale sigma."""
    return np.asarray(median) * np.exp(sigma * rng.standard_normal(n))


def _start_times(rng: np.random.Generator, hour_probabilities: np.ndarray) -> np.ndarray:
    """Timestamps (s) on a uniform day with the hour drawn per row from [N, 24] probabilities."""
    n = len(hour_probabilities)
    day = rng.integers(0, _N_DAYS, size=n)
    hour = _sample_rows(rng, hour_probabilities)
    return day * _DAY + hour * _HOUR + rng.random(n) * _HOUR


def _event_sizes(rng: np.random.Generator, total: int, low: int, high: int) -> np.ndarray:
    """Event sizes uniform in [low, high] that sum to exactly ``total`` (last one trimmed)."""
    if total <= 0:
        return np.zeros(0, dtype=np.int64)
    sizes = rng.integers(low, high + 1, size=total // low + 1)
    ends = np.cumsum(sizes)
    n_events = int(np.searchsorted(ends, total)) + 1
    sizes = sizes[:n_events].copy()
    sizes[-1] -= ends[n_events - 1] - total
    return sizes


def _expand(
    rng: np.random.Generator, sizes: np.ndarray, starts: np.ndarray, mean_gap_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of events: (event index, position within event, timestamp) per row.

    Event ``e`` has ``sizes[e]`` rows; the first at ``starts[e]``, the next ones separated by
    exponential gaps with mean ``mean_gap_s[e]`` seconds.
    """
    event = np.repeat(np.arange(len(sizes)), sizes)
    first = np.cumsum(sizes) - sizes
    position = np.arange(len(event)) - first[event]
    gaps = rng.exponential(1.0, size=len(event)) * mean_gap_s[event]
    gaps[position == 0] = 0.0
    elapsed = np.cumsum(gaps)
    elapsed -= elapsed[first][event]
    return event, position, starts[event] + elapsed


def _rows(
    *,
    customer: np.ndarray,
    timestamp: np.ndarray,
    category: np.ndarray,
    amount: np.ndarray,
    card_present: np.ndarray,
    distance: np.ndarray,
    foreign: np.ndarray,
    new_device: np.ndarray,
    pattern: int,
) -> dict[str, np.ndarray]:
    """A block of rows as a dict of equal-length arrays (``new_device`` -1 = decide later)."""
    n = len(customer)
    return {
        "customer": customer.astype(np.int64),
        "timestamp": timestamp.astype(np.float64),
        "category": category.astype(np.int64),
        "amount": amount.astype(np.float64),
        "card_present": card_present.astype(np.int64),
        "distance": distance.astype(np.float64),
        "foreign": foreign.astype(np.int64),
        "new_device": new_device.astype(np.int64),
        "pattern": np.full(n, pattern, dtype=np.int64),
    }


class _Customers:
    """Per-customer profile arrays (see the module docstring)."""

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.n = n
        self.spend = _lognormal(rng, 35.0, 0.7, n)
        self.activity = rng.gamma(2.0, 1.0, size=n)
        self.mix = rng.gamma(_POPULATION_MIX * 8.0, 1.0, size=(n, _N_CAT)) + 1e-12
        self.mix /= self.mix.sum(axis=1, keepdims=True)
        self.travel = rng.beta(0.8, 12.0, size=n)
        self.area = rng.choice(3, size=n, p=[0.6, 0.3, 0.1])  # urban, rural, border
        young = rng.random(n) < 0.10
        self.age0 = np.where(
            young,
            rng.integers(0, 91, size=n),
            np.minimum(30 + _lognormal(rng, 1100.0, 0.8, n), 9_000).astype(np.int64),
        )
        switches = rng.random(n) < 0.30
        self.phone_switch = np.where(switches, rng.random(n) * _N_DAYS * _DAY, np.inf)
        # Expected amount of a legitimate purchase, the prior for avg_amount_30d.
        noise_mean = np.exp(0.5 * _AMOUNT_SIGMA**2)
        self.expected_amount = self.spend * (self.mix @ _AMOUNT_MULTIPLIER) * noise_mean


def _legit_amount(rng: np.random.Generator, spend: np.ndarray, category: np.ndarray) -> np.ndarray:
    """Spend level x category multiplier x log-normal noise, 1.5% one-off big purchases."""
    n = len(category)
    amount = spend * _AMOUNT_MULTIPLIER[category] * np.exp(_AMOUNT_SIGMA * rng.standard_normal(n))
    big = rng.random(n) < 0.015
    amount[big] *= rng.uniform(3.0, 10.0, size=int(big.sum()))
    return amount


def _local_distance(rng: np.random.Generator, area: np.ndarray) -> np.ndarray:
    """Distance (km) of local shopping: median 4 km urban/border, 15 km rural."""
    median = np.where(area == 1, 15.0, 4.0)
    return _lognormal(rng, median, 0.9, len(area))


def _home_device_distance(rng: np.random.Generator, area: np.ndarray) -> np.ndarray:
    """Card-not-present, cardholder's own device: IP geolocation near home, 12% far (mobile/VPN)."""
    distance = _local_distance(rng, area) * 1.5
    away = rng.random(len(area)) < 0.12
    distance[away] = _lognormal(rng, 300.0, 1.2, int(away.sum()))
    return distance


def _fraudster_device_distance(rng: np.random.Generator, n: int, proxy_share: float) -> np.ndarray:
    """Card-not-present, fraudster's device: far away, or behind a proxy near the victim."""
    proxy = rng.random(n) < proxy_share
    return np.where(proxy, _lognormal(rng, 20.0, 1.0, n), _lognormal(rng, 600.0, 1.0, n))


def _legit_single(
    rng: np.random.Generator, people: _Customers, customer: np.ndarray, pattern: int
) -> dict[str, np.ndarray]:
    """Independent everyday purchases of ``customer`` (also used for ``mimic`` fraud)."""
    n = len(customer)
    travelling = rng.random(n) < people.travel[customer]
    category = _sample_rows(rng, people.mix[customer])
    category[travelling] = _sample_categories(rng, _TRAVEL_MIX, int(travelling.sum()))
    timestamp = _start_times(rng, _CATEGORY_HOURS[category])
    amount = _legit_amount(rng, people.spend[customer], category)
    amount[travelling] *= 1.4
    card_present = (rng.random(n) >= _NOT_PRESENT[category]).astype(np.int64)

    area = people.area[customer]
    distance = _local_distance(rng, area)
    foreign = (rng.random(n) < np.where(area == 2, 0.15, 0.002)).astype(np.int64)
    abroad = travelling & (rng.random(n) < 0.45)
    domestic_trip = travelling & ~abroad
    distance[domestic_trip] = _lognormal(rng, 400.0, 0.8, int(domestic_trip.sum()))
    distance[abroad] = _lognormal(rng, 2_500.0, 0.8, int(abroad.sum()))
    foreign[abroad] = 1
    remote = (card_present == 0) & ~travelling
    distance[remote] = _home_device_distance(rng, area[remote])
    foreign[remote] = (rng.random(int(remote.sum())) < 0.07).astype(np.int64)
    return _rows(
        customer=customer,
        timestamp=timestamp,
        category=category,
        amount=amount,
        card_present=card_present,
        distance=distance,
        foreign=foreign,
        new_device=np.full(n, -1),
        pattern=pattern,
    )


def _legit_bursts(
    rng: np.random.Generator, people: _Customers, n_rows: int
) -> dict[str, np.ndarray]:
    """Legitimate bursts: errands (card present) and in-app purchases (small, not present)."""
    sizes = _event_sizes(rng, n_rows, 2, 8)
    n_events = len(sizes)
    customer = rng.choice(people.n, size=n_events, p=people.activity / people.activity.sum())
    app = rng.random(n_events) < 0.4
    hours = np.where(
        app[:, None], _CATEGORY_HOURS[_CAT["digital_goods"]], _CATEGORY_HOURS[_CAT["grocery"]]
    )
    starts = _start_times(rng, hours)
    event, _, timestamp = _expand(rng, sizes, starts, np.where(app, 180.0, 600.0))
    customer, app = customer[event], app[event]
    n = len(event)

    category = _sample_categories(rng, _ERRAND_MIX, n)
    category[app] = _sample_categories(rng, _APP_MIX, int(app.sum()))
    amount = _legit_amount(rng, people.spend[customer], category) * 0.6
    n_app = int(app.sum())  # app-store style prices: mostly x.99, some arbitrary
    price_point = rng.integers(1, 10, size=n_app) - 0.01
    amount[app] = np.where(rng.random(n_app) < 0.7, price_point, rng.uniform(0.5, 10.0, n_app))
    card_present = (~app).astype(np.int64)
    distance = _local_distance(rng, people.area[customer])
    distance[app] = _home_device_distance(rng, people.area[customer][app])
    foreign = (rng.random(n) < np.where(app, 0.07, 0.002)).astype(np.int64)
    return _rows(
        customer=customer,
        timestamp=timestamp,
        category=category,
        amount=amount,
        card_present=card_present,
        distance=distance,
        foreign=foreign,
        new_device=np.full(n, -1),
        pattern=_NONE,
    )


def _card_testing(
    rng: np.random.Generator, people: _Customers, n_rows: int
) -> dict[str, np.ndarray]:
    """``n_rows`` rows of card-testing bursts (tiny CNP charges around midnight)."""
    sizes = _event_sizes(rng, n_rows, 2, 10)
    n_events = len(sizes)
    victim = rng.integers(0, people.n, size=n_events)
    starts = _start_times(rng, np.broadcast_to(_CARD_TESTING_HOURS, (n_events, 24)))
    slow = rng.random(n_events) < 0.3
    event, position, timestamp = _expand(rng, sizes, starts, np.where(slow, 1_200.0, 45.0))
    n = len(event)

    category = _sample_categories(rng, _CARD_TESTING_MIX, n)
    round_amount = rng.choice([0.5, 1.0, 2.0, 5.0], size=n)
    amount = np.where(rng.random(n) < 0.4, round_amount, rng.uniform(0.3, 9.0, size=n))
    cash_out = (position == sizes[event] - 1) & (rng.random(n_events) < 0.2)[event]
    category[cash_out] = _sample_categories(rng, _CASH_OUT_MIX, int(cash_out.sum()))
    amount[cash_out] = _lognormal(rng, 150.0, 0.6, int(cash_out.sum()))
    new_device = (rng.random(n_events) < 0.5)[event]
    foreign = (rng.random(n_events) < 0.3)[event]
    return _rows(
        customer=victim[event],
        timestamp=timestamp,
        category=category,
        amount=amount,
        card_present=np.zeros(n),
        distance=_fraudster_device_distance(rng, n, 0.25),
        foreign=foreign,
        new_device=new_device,
        pattern=_CARD_TESTING,
    )


def _account_takeover(
    rng: np.random.Generator, people: _Customers, n_rows: int
) -> dict[str, np.ndarray]:
    """``n_rows`` rows of account takeover (~6x usual amounts, new device, CNP)."""
    sizes = _event_sizes(rng, n_rows, 1, 3)
    n_events = len(sizes)
    victim = rng.integers(0, people.n, size=n_events)
    starts = _start_times(rng, np.broadcast_to(_TAKEOVER_HOURS, (n_events, 24)))
    event, _, timestamp = _expand(rng, sizes, starts, np.full(n_events, 2_400.0))
    customer = victim[event]
    n = len(event)

    category = _sample_categories(rng, _TAKEOVER_MIX, n)
    amount = people.expected_amount[customer] * _lognormal(rng, 6.0, 0.4, n)
    card_present = (rng.random(n) < 0.15).astype(np.int64)
    distance = np.where(
        card_present == 1, _lognormal(rng, 30.0, 1.0, n), _fraudster_device_distance(rng, n, 0.6)
    )
    new_device = (rng.random(n_events) < 0.8)[event]
    foreign = rng.random(n) < 0.15
    return _rows(
        customer=customer,
        timestamp=timestamp,
        category=category,
        amount=amount,
        card_present=card_present,
        distance=distance,
        foreign=foreign,
        new_device=new_device,
        pattern=_TAKEOVER,
    )


def _high_value_foreign(
    rng: np.random.Generator, people: _Customers, n_rows: int
) -> dict[str, np.ndarray]:
    """``n_rows`` rows of high-value purchases, mostly at foreign merchants far away."""
    sizes = _event_sizes(rng, n_rows, 1, 2)
    n_events = len(sizes)
    victim = rng.integers(0, people.n, size=n_events)
    starts = _start_times(rng, np.broadcast_to(_FOREIGN_HOURS, (n_events, 24)))
    event, _, timestamp = _expand(rng, sizes, starts, np.full(n_events, 3_600.0))
    customer = victim[event]
    n = len(event)

    category = _sample_categories(rng, _FOREIGN_MIX, n)
    amount = np.maximum(_lognormal(rng, 700.0, 0.7, n), 3.0 * people.expected_amount[customer])
    foreign = (rng.random(n_events) < 0.85)[event]
    distance = np.where(foreign, _lognormal(rng, 3_000.0, 0.7, n), _lognormal(rng, 500.0, 1.0, n))
    card_present = rng.random(n) < 0.75
    new_device = rng.random(n) < np.where(card_present, 0.02, 0.5)
    return _rows(
        customer=customer,
        timestamp=timestamp,
        category=category,
        amount=amount,
        card_present=card_present,
        distance=distance,
        foreign=foreign,
        new_device=new_device,
        pattern=_FOREIGN,
    )


# --------------------------------------------------------------------------- history features
def _history_features(
    customer: np.ndarray, timestamp: np.ndarray, amount: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(txn_count_1h, txn_count_24h, avg_amount_30d) from each card's earlier rows.

    ``prior`` is the customer's expected amount per row, weighted as 3 earlier transactions.
    """
    order = np.lexsort((timestamp, customer))
    cust, time, value = customer[order], timestamp[order], amount[order]
    span = float(time.max() - time.min()) + 60.0 * _DAY if len(time) else 1.0
    key = (cust - cust.min()) * span + (time - time.min()) if len(time) else time
    position = np.arange(len(key))

    def earlier(window_s: float) -> np.ndarray:
        return position - np.searchsorted(key, key - window_s, side="left")

    count_1h, count_24h, count_30d = earlier(_HOUR), earlier(_DAY), earlier(30 * _DAY)
    cumulative = np.concatenate([[0.0], np.cumsum(value)])
    window_sum = cumulative[position] - cumulative[position - count_30d]
    average = (window_sum + _HISTORY_PRIOR_WEIGHT * prior[order]) / (
        count_30d + _HISTORY_PRIOR_WEIGHT
    )
    result = [np.empty_like(count_1h), np.empty_like(count_24h), np.empty_like(average)]
    for out, sorted_values in zip(result, (count_1h, count_24h, average), strict=True):
        out[order] = sorted_values
    return result[0], result[1], result[2]


# --------------------------------------------------------------------------- public API
def simulate_transactions(n_rows: int, *, fraud_rate: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """Simulate ``n_rows`` card transactions, ``round(fraud_rate * n_rows)`` of them fraud.

    Returns one row per transaction sorted by ``timestamp`` (seconds over ~90 days) with
    ``transaction_id`` 0..n-1 in that order, ``customer_id``, every feature column of
    ``FRAUD_SPEC``, ``is_fraud`` (0/1, with label noise) and ``fraud_pattern`` (the true pattern,
    one of :data:`FRAUD_PATTERNS`; never a feature). Deterministic for a given ``seed``. See the
    module docstring for the generative story. The data is simulated, not real.
    """
    if int(n_rows) != n_rows or n_rows < 1:
        raise ValueError(f"n_rows must be a positive integer, got {n_rows}")
    if not 0.0 <= fraud_rate <= 0.5:
        raise ValueError(f"fraud_rate must be in [0, 0.5], got {fraud_rate}")
    n_rows = int(n_rows)
    rng = np.random.default_rng(seed)
    people = _Customers(rng, max(10, n_rows // _ROWS_PER_CUSTOMER))

    n_fraud = round(fraud_rate * n_rows)
    per_pattern = {pattern: round(share * n_fraud) for pattern, share in _PATTERN_SHARES.items()}
    n_mimic = n_fraud - sum(per_pattern.values())
    n_legit = n_rows - n_fraud
    n_burst = round(_LEGIT_BURST_SHARE * n_legit)
    activity = people.activity / people.activity.sum()

    blocks = [
        _legit_single(rng, people, rng.choice(people.n, size=n_legit - n_burst, p=activity), _NONE),
        _legit_bursts(rng, people, n_burst),
        _legit_single(rng, people, rng.integers(0, people.n, size=n_mimic), _MIMIC),
        _card_testing(rng, people, per_pattern[_CARD_TESTING]),
        _account_takeover(rng, people, per_pattern[_TAKEOVER]),
        _high_value_foreign(rng, people, per_pattern[_FOREIGN]),
    ]
    rows = {key: np.concatenate([block[key] for block in blocks]) for key in blocks[0]}
    customer, timestamp = rows["customer"], rows["timestamp"]
    n = len(customer)

    # Device: legit-like rows are new for 3 days after a phone switch, else 1% (present) / 6% (CNP).
    since_switch = timestamp - people.phone_switch[customer]
    random_new = rng.random(n) < np.where(rows["card_present"] == 1, 0.01, 0.06)
    legit_new = ((since_switch >= 0) & (since_switch < 3 * _DAY)) | random_new
    new_device = np.where(rows["new_device"] < 0, legit_new, rows["new_device"])

    amount = np.maximum(np.round(rows["amount"], 2), 0.01)
    atm = rows["category"] == _CAT["atm"]
    amount[atm] = np.maximum(np.round(amount[atm] / 20.0) * 20.0, 20.0)
    count_1h, count_24h, average = _history_features(
        customer, timestamp, amount, people.expected_amount[customer]
    )

    pattern = rows["pattern"]
    is_fraud = pattern != _NONE
    flip = np.where(is_fraud, _UNREPORTED_FRAUD, _FRIENDLY_FRAUD)
    label = is_fraud ^ (rng.random(n) < flip)

    order = np.argsort(timestamp, kind="stable")
    categories = np.asarray(MERCHANT_CATEGORIES, dtype=object)
    patterns = np.asarray(FRAUD_PATTERNS, dtype=object)
    frame = pd.DataFrame(
        {
            "transaction_id": np.arange(n, dtype=np.int64),
            "timestamp": timestamp[order],
            "customer_id": customer[order],
            "amount": amount[order],
            "hour": ((timestamp[order] % _DAY) // _HOUR).astype(np.int64),
            "card_present": rows["card_present"][order],
            "distance_from_home_km": np.round(
                np.minimum(rows["distance"][order], _MAX_DISTANCE_KM), 1
            ),
            "txn_count_1h": count_1h[order].astype(np.int64),
            "txn_count_24h": count_24h[order].astype(np.int64),
            "avg_amount_30d": np.round(average[order], 2),
            "new_device": new_device[order].astype(np.int64),
            "foreign_merchant": rows["foreign"][order],
            "account_age_days": (people.age0[customer[order]] + timestamp[order] // _DAY).astype(
                np.int64
            ),
            "merchant_category": categories[rows["category"][order]],
            "is_fraud": label[order].astype(np.int64),
            "fraud_pattern": patterns[pattern[order]],
        }
    )
    frame["merchant_category"] = frame["merchant_category"].astype(str)
    frame["fraud_pattern"] = frame["fraud_pattern"].astype(str)
    return frame
