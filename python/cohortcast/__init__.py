"""cohortcast: churn predictions next to the cohorts analytics engineers already use."""

__version__ = "0.1.0"
