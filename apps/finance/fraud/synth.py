"""A realistic synthetic card-transaction generator (numpy + polars, no torch).

Customers with a home country, a usual channel and a typical amount make transactions on a
daily rhythm. Frauds follow three patterns, each leaving a different trace:
- card testing: bursts of tiny online digital-goods payments minutes apart (high velocity);
- account takeover: large online payments from abroad at night on a new device;
- skimming: large ATM/fuel payments far from home.
Some frauds hide (they look normal) and some normal customers travel, so the task is not
trivially separable. `builtin:transactions` in `data.path` means this generator.
"""

from __future__ import annotations

import numpy as np
import polars as pl

CATEGORIES = ["grocery", "restaurant", "fuel", "travel", "digital_goods", "electronics", "fashion", "atm", "health", "utilities"]
CATEGORY_P = [0.24, 0.16, 0.10, 0.04, 0.07, 0.06, 0.10, 0.08, 0.08, 0.07]
CHANNELS = ["pos", "online", "atm", "contactless"]
COUNTRIES = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "NG", "RU", "CN"]
HOME_P = [0.45, 0.15, 0.12, 0.10, 0.06, 0.05, 0.04, 0.03, 0.0, 0.0, 0.0, 0.0]
START = np.datetime64("2024-01-01T00:00:00", "s")


def generate(rows: int = 200_000, fraud_rate: float = 0.002, seed: int = 0, days: int = 90) -> pl.DataFrame:
    """`rows` transactions over `days` days, about `fraud_rate` of them fraudulent.

    Columns: transaction_id, customer_id, timestamp, amount, merchant_category, channel,
    country, hour, distance_km (nulls), device_score (nulls), customer_txn_24h,
    amount_vs_history (null on a customer's first payment), is_fraud.
    """
    rng = np.random.default_rng(seed)
    n_fraud = int(round(rows * fraud_rate))
    n_normal = rows - n_fraud
    n_customers = max(10, rows // 40)
    home = rng.choice(len(COUNTRIES), n_customers, p=HOME_P)
    usual_amount = rng.lognormal(3.4, 0.7, n_customers)
    online_share = rng.beta(2, 5, n_customers)

    # normal transactions
    cust = rng.integers(0, n_customers, n_normal)
    day = rng.integers(0, days, n_normal)
    hour = np.clip(rng.normal(14, 4.5, n_normal), 0, 23.99)
    seconds = day * 86400 + hour * 3600
    amount = usual_amount[cust] * rng.lognormal(0, 0.6, n_normal)
    category = rng.choice(len(CATEGORIES), n_normal, p=CATEGORY_P)
    online = rng.random(n_normal) < online_share[cust]
    channel = np.where(online, 1, rng.choice([0, 2, 3], n_normal, p=[0.5, 0.1, 0.4]))
    channel = np.where(category == CATEGORIES.index("atm"), 2, channel)
    travelling = rng.random(n_normal) < 0.02
    country = np.where(travelling, rng.integers(0, len(COUNTRIES), n_normal), home[cust])
    distance = np.where(travelling, rng.exponential(800, n_normal), rng.exponential(8, n_normal))
    device = rng.beta(8, 2, n_normal)
    normal = dict(cust=cust, seconds=seconds, amount=amount, category=category, channel=channel,
                  country=country, distance=distance, device=device, fraud=np.zeros(n_normal, np.int8))
    frauds = _frauds(rng, n_fraud, n_customers, days, usual_amount, home)
    parts = {k: np.concatenate([normal[k], frauds[k]]) for k in normal}
    return _frame(rng, parts)


def _frauds(rng, n: int, n_customers: int, days: int, usual_amount: np.ndarray, home: np.ndarray) -> dict:
    """n fraudulent rows from the three patterns (plus 15% that look like normal payments)."""
    kind = rng.choice(4, n, p=[0.35, 0.30, 0.20, 0.15])  # testing, takeover, skimming, hidden
    cust = rng.integers(0, n_customers, n)
    # card testing comes in bursts: one start per 4 rows, minutes apart
    burst_start = rng.integers(0, days * 86400, n)
    burst_start = burst_start[np.arange(n) // 4 * 4 % max(n, 1)] if n else burst_start
    cust = np.where(kind == 0, cust[np.arange(n) // 4 * 4 % max(n, 1)], cust)
    night = rng.uniform(0, 5, n) * 3600 + rng.integers(0, days, n) * 86400
    day_time = rng.integers(0, days, n) * 86400 + np.clip(rng.normal(14, 5, n), 0, 23.99) * 3600
    seconds = np.select([kind == 0, kind == 1], [burst_start + rng.integers(0, 900, n), night], day_time)
    amount = np.select(
        [kind == 0, kind == 1, kind == 2],
        [rng.uniform(0.5, 4.0, n), usual_amount[cust] * rng.uniform(4, 25, n), usual_amount[cust] * rng.uniform(3, 12, n)],
        usual_amount[cust] * rng.lognormal(0, 0.6, n),
    )
    category = np.select(
        [kind == 0, kind == 1, kind == 2],
        [np.full(n, CATEGORIES.index("digital_goods")),
         rng.choice([CATEGORIES.index(c) for c in ("electronics", "travel", "digital_goods", "fashion")], n),
         rng.choice([CATEGORIES.index("atm"), CATEGORIES.index("fuel")], n)],
        rng.choice(len(CATEGORIES), n, p=CATEGORY_P),
    )
    channel = np.select([kind <= 1, kind == 2], [np.ones(n, int), np.where(category == CATEGORIES.index("atm"), 2, 0)],
                        rng.choice(4, n))
    foreign = rng.choice([COUNTRIES.index(c) for c in ("NG", "RU", "CN", "IN", "BR")], n)
    country = np.where((kind == 1) | ((kind == 0) & (rng.random(n) < 0.5)), foreign, home[cust])
    distance = np.select([kind == 1, kind == 2], [rng.exponential(3000, n), rng.uniform(50, 900, n)], rng.exponential(8, n))
    device = np.select([kind == 1, kind == 0], [rng.beta(2, 6, n), rng.beta(4, 4, n)], rng.beta(8, 2, n))
    return dict(cust=cust, seconds=seconds.astype(np.float64), amount=amount, category=category, channel=channel,
                country=country, distance=distance, device=device, fraud=np.ones(n, np.int8))


def _frame(rng, p: dict) -> pl.DataFrame:
    """Sort by time, add ids, nulls and per-customer velocity/history features."""
    n = len(p["cust"])
    device = np.where(rng.random(n) < 0.05, np.nan, p["device"])  # 5% no device fingerprint
    distance = np.where(rng.random(n) < 0.03, np.nan, p["distance"])  # 3% no geolocation
    df = pl.DataFrame({
        "customer_id": p["cust"].astype(np.int64),
        "timestamp": (START + p["seconds"].astype("timedelta64[s]")).astype("datetime64[ms]"),
        "amount": np.round(p["amount"], 2),
        "merchant_category": np.asarray(CATEGORIES)[p["category"]],
        "channel": np.asarray(CHANNELS)[p["channel"]],
        "country": np.asarray(COUNTRIES)[p["country"]],
        "distance_km": np.round(distance, 1),
        "device_score": np.round(device, 3),
        "is_fraud": p["fraud"],
    }).with_columns(pl.col("distance_km", "device_score").fill_nan(None))
    df = df.sort("customer_id", "timestamp")
    t = (df["timestamp"].dt.epoch("s").to_numpy()).astype(np.int64)
    c = df["customer_id"].to_numpy()
    key = c * (10 ** 10) + t  # customers never overlap: one searchsorted gives per-customer windows
    count_24h = np.arange(n) - np.searchsorted(key, key - 86400, side="left")
    df = df.with_columns(
        customer_txn_24h=pl.Series(count_24h.astype(np.int32)),
        amount_vs_history=(pl.col("amount") / ((pl.col("amount").cum_sum() - pl.col("amount")).over("customer_id")
                           / pl.int_range(pl.len()).over("customer_id"))).round(3),
    ).with_columns(pl.col("amount_vs_history").fill_nan(None))
    df = df.with_columns(pl.when(pl.col("amount_vs_history").is_infinite()).then(None)
                         .otherwise(pl.col("amount_vs_history")).alias("amount_vs_history"))
    df = df.sort("timestamp").with_columns(
        transaction_id=pl.int_range(pl.len(), dtype=pl.Int64) + 1,
        hour=pl.col("timestamp").dt.hour().cast(pl.Int32),
    )
    return df.select("transaction_id", "customer_id", "timestamp", "amount", "merchant_category", "channel",
                     "country", "hour", "distance_km", "device_score", "customer_txn_24h", "amount_vs_history", "is_fraud")
