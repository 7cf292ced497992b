"""Hand-made feature snapshots shared by the ML tests (in memory and in Postgres)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

AS_OF_DATES = pd.date_range("2011-01-01", "2011-12-01", freq="MS")
LAST_LABELLED = pd.Timestamp("2011-09-01")
COUNTRIES = ("United Kingdom", "France", "Germany")


def make_snapshots(
    customers: int = 60, *, seed: int = 0, perfect_recency: bool = False
) -> pd.DataFrame:
    """Monthly snapshots 2011-01..2011-12, labelled through 2011-09 (as in the demo data).

    Churn is likelier the longer since the last order; with `perfect_recency` it is exactly
    "no order in the last 60 days".
    """
    rng = np.random.default_rng(seed)
    rows = []
    for as_of in AS_OF_DATES:
        for number in range(customers):
            days = int(rng.integers(0, 150))
            orders = int(rng.integers(1, 20))
            if perfect_recency:
                churned = days > 60
            else:
                odds = math.exp((days - 60) / 25 - (orders - 10) / 10)
                churned = bool(rng.random() < odds / (1 + odds))
            observed = as_of <= LAST_LABELLED
            rows.append(
                {
                    "customer_id": f"C{number:03d}",
                    "as_of_date": as_of.date(),
                    "last_ordered_at": as_of - pd.Timedelta(days=days),
                    "first_order_date": as_of.date(),
                    "days_since_last_order": days,
                    "order_count": orders,
                    "net_revenue_amount": float(rng.gamma(2.0, 100.0)),
                    "country": COUNTRIES[number % 3],
                    "is_vip": number % 5 == 0,
                    "is_label_observed": observed,
                    "is_churned": churned if observed else None,
                }
            )
    return pd.DataFrame(rows)
