"""Every number the quality gate judges by, named, with the reason for its value.

Change a threshold here and nowhere else; `docs/quality.md` explains each one for the people
who read the results in Metabase.
"""

from __future__ import annotations

from datetime import datetime, timedelta

#: Share of raw lines that may repeat an earlier line on every source column. The bundled
#: data has 5,268 exact duplicates in 541,909 lines (0.97 %); a load that ran twice has at
#: least 50 %. 5 % leaves room for a source with a few more repeats than ours.
RAW_DUPLICATE_SHARE_MAX = 0.05

#: A new load may hold this fraction fewer or more rows than the last accepted one
#: (0.5 = between half and one and a half times). A doubled or truncated load falls outside.
RAW_ROW_COUNT_BAND = 0.5

#: Customer ids in the source are five digits; null means an unknown (guest) customer.
RAW_CUSTOMER_ID_PATTERN = r"^\d{5}$"

#: At least this share of raw lines name a customer (the bundled data: 75 %). A warning only:
#: lines without a customer are dropped in staging, so fewer of them means less to learn from.
RAW_CUSTOMER_ID_PRESENT_MIN_SHARE = 0.6

#: Invoice dates before this are not from any plausible load of this shop's data.
RAW_INVOICE_DATE_MIN = datetime(2000, 1, 1)

#: Invoice dates may run this far past the current time (local clocks, time zones), no more.
RAW_INVOICE_DATE_FUTURE_SLACK = timedelta(days=1)

#: Share of raw lines that may carry a negative unit price (bad-debt adjustments: 2 in the
#: bundled data). A warning only: staging filters them, but many of them means a format change.
RAW_NEGATIVE_PRICE_MAX_SHARE = 0.001

#: The feature snapshot may change by this fraction of its rows between accepted runs. Each
#: month adds one snapshot date, so steady growth stays well inside it.
FEATURE_ROW_COUNT_BAND = 0.5

#: Predictions whose standard deviation is below this have collapsed to (almost) one value:
#: the model is not ranking customers and must not be published.
PREDICTION_STDEV_MIN = 0.001

#: How many failing values each failed expectation keeps (GX's partial_unexpected_list).
FAILING_EXAMPLE_COUNT = 5
