"""Metric, calibration, drift and model-choice arithmetic against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cohortcast.errors import ModelError
from cohortcast.ml.dataset import FeatureSpec
from cohortcast.ml.drift import categorical_psi, feature_drift, numeric_psi
from cohortcast.ml.evaluation import (
    calibration_table,
    choose_published_model,
    compute_metrics,
    expected_calibration_error,
    top_decile_lift,
)


def test_expected_calibration_error_by_hand() -> None:
    # bins of width 0.1: {0.05}, {0.15, 0.15}, {0.85}, {0.95}
    # 1/5*|0.05-0| + 2/5*|0.15-0.5| + 1/5*|0.85-1| + 1/5*|0.95-1| = 0.01 + 0.14 + 0.03 + 0.01
    labels = [0, 0, 1, 1, 1]
    probabilities = [0.05, 0.15, 0.15, 0.85, 0.95]
    assert expected_calibration_error(labels, probabilities) == pytest.approx(0.19)


def test_expected_calibration_error_puts_one_in_the_last_bin() -> None:
    # p = 1.0 shares the [0.9, 1] bin with 0.9: mean 0.95 against an observed rate of 1
    assert expected_calibration_error([1, 1], [0.9, 1.0]) == pytest.approx(0.05)


def test_top_decile_lift_by_hand() -> None:
    # 20 rows, 5 churners (rate 0.25); the top ceil(20/10) = 2 rows hold 1 churner (rate 0.5)
    probabilities = np.linspace(0.99, 0.0, 20)
    labels = np.zeros(20, dtype=int)
    labels[[0, 5, 6, 7, 8]] = 1
    assert top_decile_lift(labels, probabilities) == pytest.approx(2.0)


def test_top_decile_lift_rounds_the_decile_up() -> None:
    # 15 rows: the top decile is ceil(1.5) = 2 rows, both churners; overall 3/15
    probabilities = np.linspace(1.0, 0.0, 15)
    labels = np.zeros(15, dtype=int)
    labels[[0, 1, 14]] = 1
    assert top_decile_lift(labels, probabilities) == pytest.approx(1.0 / (3 / 15))


def test_metrics_that_are_undefined_are_left_out() -> None:
    metrics = compute_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert "roc_auc" not in metrics
    assert "pr_auc" not in metrics
    assert "top_decile_lift" not in metrics
    # Brier and log loss are still defined on one class
    assert metrics["brier"] == pytest.approx((0.01 + 0.04 + 0.09) / 3)
    assert metrics["log_loss"] == pytest.approx(
        -(math.log(0.9) + math.log(0.8) + math.log(0.7)) / 3
    )


def test_metrics_on_a_perfect_ranking() -> None:
    metrics = compute_metrics([0, 0, 1, 1], [0.1, 0.4, 0.6, 0.9])
    assert metrics["roc_auc"] == pytest.approx(1.0)
    assert metrics["pr_auc"] == pytest.approx(1.0)
    assert metrics["brier"] == pytest.approx((0.01 + 0.16 + 0.16 + 0.01) / 4)


def test_calibration_table_by_decile() -> None:
    # 20 rows ranked into 10 deciles of 2; decile 10 holds the two highest predictions
    probabilities = np.arange(1, 21) / 20
    labels = np.array([0, 1] * 10)
    table = calibration_table(labels, probabilities)
    assert list(table["decile"]) == list(range(1, 11))
    assert list(table["row_count"]) == [2] * 10
    assert table.loc[table["decile"] == 10, "mean_predicted"].item() == pytest.approx(
        (0.95 + 1.0) / 2
    )
    assert table.loc[table["decile"] == 1, "observed_rate"].item() == pytest.approx(0.5)


def test_numeric_psi_by_hand() -> None:
    # two bins split at the reference median 5.5, plus a null bucket
    # reference shares 0.5, 0.5, 0 (floored to 0.0001); current 5/10, 3/10, 2/10
    reference = pd.Series(np.arange(1.0, 11.0))
    current = pd.Series([1, 2, 3, 4, 5, 6, 7, 8, np.nan, np.nan], dtype=float)
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + (0.2 - 0.0001) * math.log(0.2 / 0.0001)
    assert numeric_psi(reference, current, bins=2) == pytest.approx(expected)


def test_numeric_psi_with_deciles_is_zero_for_the_same_distribution() -> None:
    values = pd.Series(np.arange(100.0))
    assert numeric_psi(values, values.sample(frac=1.0, random_state=1)) == pytest.approx(0.0)


def test_categorical_psi_by_hand() -> None:
    reference = pd.Series(["a"] * 6 + ["b"] * 4)
    current = pd.Series(["a"] * 5 + ["b"] * 3 + ["c"] * 2)
    expected = (
        (0.5 - 0.6) * math.log(0.5 / 0.6)
        + (0.3 - 0.4) * math.log(0.3 / 0.4)
        + (0.2 - 0.0001) * math.log(0.2 / 0.0001)
    )
    assert categorical_psi(reference, current) == pytest.approx(expected)


def test_feature_drift_flags_features_over_the_threshold() -> None:
    reference = pd.DataFrame({"spend": np.arange(100.0), "country": ["uk"] * 100})
    current = pd.DataFrame({"spend": np.arange(100.0), "country": ["uk"] * 50 + ["fr"] * 50})
    spec = FeatureSpec(numeric=("spend",), categorical=("country",))
    drift = feature_drift(reference, current, spec, threshold=0.2).set_index("feature")
    assert not drift.loc["spend", "is_drifted"]
    assert drift.loc["country", "is_drifted"]
    assert drift.loc["country", "psi"] == pytest.approx(
        (0.5 - 1.0) * math.log(0.5) + (0.5 - 0.0001) * math.log(0.5 / 0.0001)
    )


def test_the_candidate_is_kept_unless_a_baseline_is_strictly_better() -> None:
    means = {
        "candidate": {"log_loss": 0.50, "pr_auc": 0.70},
        "base_rate": {"log_loss": 0.69, "pr_auc": 0.40},
        "recency_rule": {"log_loss": 0.50, "pr_auc": 0.72},
        "rfm_logistic": {"log_loss": 0.55, "pr_auc": 0.65},
    }
    assert choose_published_model(means, "log_loss").model == "candidate"
    assert choose_published_model(means, "pr_auc").model == "recency_rule"


def test_a_baseline_win_is_published_and_said() -> None:
    means = {
        "candidate": {"log_loss": 0.60},
        "base_rate": {"log_loss": 0.69},
        "recency_rule": {"log_loss": 0.45},
        "rfm_logistic": {"log_loss": 0.50},
    }
    selection = choose_published_model(means, "log_loss")
    assert selection.model == "recency_rule"
    assert "beats the candidate" in selection.reason


def test_an_unknown_selection_metric_is_refused() -> None:
    with pytest.raises(ModelError, match="selection metric"):
        choose_published_model({}, "accuracy")
