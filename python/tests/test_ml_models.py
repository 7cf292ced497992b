"""Point-in-time training, backtest, baselines, scoring and artifacts on small hand-made data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ml_data import LAST_LABELLED, make_snapshots
from threadpoolctl import threadpool_limits

from cohortcast.errors import ModelError
from cohortcast.ml.dataset import (
    FeatureSpec,
    check_no_label_leakage,
    labelled,
    prepare,
    spec_from_column_types,
    spec_from_frame,
    training_rows,
)
from cohortcast.ml.evaluation import backtest, choose_published_model
from cohortcast.ml.registry import (
    METADATA_FILE,
    ModelBundle,
    library_versions,
    load_artifact,
    save_artifact,
)
from cohortcast.ml.scoring import RiskBands, driver_reference, score_rows, top_drivers
from cohortcast.ml.training import (
    CANDIDATE,
    RECENCY_RULE,
    TrainingConfig,
    fit_model,
    predict_churn,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """OpenMP threads spin when the machine is busy (other test processes); one is faster."""
    with threadpool_limits(limits=1):
        yield


def prepared(frame: pd.DataFrame) -> tuple[pd.DataFrame, FeatureSpec]:
    spec = spec_from_frame(frame)
    return prepare(frame, spec), spec


def dates(values: list[pd.Timestamp]) -> list[str]:
    return [value.date().isoformat() for value in values]


def test_features_are_found_by_convention() -> None:
    spec = spec_from_frame(make_snapshots(3))
    assert spec.numeric == ("days_since_last_order", "net_revenue_amount", "order_count")
    assert spec.categorical == ("country", "is_vip")


def test_features_from_postgres_types() -> None:
    spec = spec_from_column_types(
        {
            "customer_id": "text",
            "as_of_date": "date",
            "last_ordered_at": "timestamp with time zone",
            "order_count": "bigint",
            "average_order_amount": "numeric",
            "cohort_acquisition_month": "text",
            "cohort_lifecycle_stage": "text",
            "is_label_observed": "boolean",
            "has_returned": "boolean",
            "is_churned": "boolean",
        }
    )
    assert spec.numeric == ("average_order_amount", "order_count")
    # A calendar truncation (`_month`) is when, not who: not a feature.
    assert spec.categorical == ("cohort_lifecycle_stage", "has_returned")


def test_training_rows_exclude_snapshots_whose_label_window_overlaps_the_cutoff() -> None:
    frame, _ = prepared(make_snapshots(5))
    rows = training_rows(frame, pd.Timestamp("2011-09-01"), 90)
    # 2011-06-01 + 90 days = 2011-08-30 <= 2011-09-01; 2011-07-01 + 90 days = 2011-09-29 > it
    assert dates(sorted(rows["as_of_date"].unique())) == [
        "2011-01-01",
        "2011-02-01",
        "2011-03-01",
        "2011-04-01",
        "2011-05-01",
        "2011-06-01",
    ]
    assert len(rows) == 6 * 5


def test_a_training_set_with_an_overlapping_label_window_is_rejected() -> None:
    frame, _ = prepared(make_snapshots(5))
    leaky = labelled(frame).loc[lambda rows: rows["as_of_date"] <= "2011-07-01"]
    with pytest.raises(ModelError, match="2011-07-01"):
        check_no_label_leakage(leaky, pd.Timestamp("2011-09-01"), 90)


def test_backtest_trains_each_cutoff_only_on_observed_label_windows() -> None:
    frame, spec = prepared(make_snapshots(60))
    result = backtest(frame, spec, TrainingConfig(backtest_cutoffs=2))
    assert dates(result.cutoffs) == ["2011-08-01", "2011-09-01"]
    # 2011-05-01 + 90 days = 2011-07-30 <= 2011-08-01; 2011-06-01 + 90 days is past it
    assert dates(result.training_dates[pd.Timestamp("2011-08-01")]) == [
        "2011-01-01",
        "2011-02-01",
        "2011-03-01",
        "2011-04-01",
        "2011-05-01",
    ]
    assert dates(result.training_dates[pd.Timestamp("2011-09-01")])[-1] == "2011-06-01"
    evaluations = result.evaluations
    per_cutoff = evaluations.loc[evaluations["cutoff_date"].notna()]
    assert set(per_cutoff["model"]) == {"candidate", "base_rate", "recency_rule", "rfm_logistic"}
    assert set(per_cutoff["metric"]) == {
        "roc_auc",
        "pr_auc",
        "brier",
        "log_loss",
        "ece",
        "top_decile_lift",
    }
    assert set(per_cutoff["row_count"]) == {60}
    pooled = evaluations.loc[evaluations["cutoff_date"].isna()]
    assert set(pooled["row_count"]) == {120}


def test_backtest_reports_cohort_slices_with_enough_members() -> None:
    frame, spec = prepared(make_snapshots(60))
    acquisition = pd.DataFrame(
        {
            "customer_id": [f"C{n:03d}" for n in range(60)],
            "cohort_name": "acquisition_month",
            "cohort_key": ["2010-12"] * 50 + ["2011-08"] * 10,
            "entered_at": pd.to_datetime(["2010-12-05"] * 50 + ["2011-08-10"] * 10, utc=True),
            "exited_at": pd.NaT,
        }
    )
    # 40 customers active from 2010-12-10 until 2011-08-15: members at 2011-08-01 only
    lifecycle = pd.DataFrame(
        {
            "customer_id": [f"C{n:03d}" for n in range(40)],
            "cohort_name": "lifecycle",
            "cohort_key": "active",
            "entered_at": pd.Timestamp("2010-12-10", tz="UTC"),
            "exited_at": pd.Timestamp("2011-08-15", tz="UTC"),
        }
    )
    membership = pd.concat([acquisition, lifecycle], ignore_index=True)
    result = backtest(
        frame, spec, TrainingConfig(backtest_cutoffs=2, min_slice_rows=30), membership
    )
    evaluations = result.evaluations
    slices = evaluations.groupby("cutoff_date", dropna=False)["cohort_slice"].unique()
    # 2011-08 members entered after both cutoffs; 10 members would be too few anyway
    assert set(slices[date(2011, 8, 1)]) == {
        "all",
        "acquisition_month=2010-12",
        "lifecycle=active",
    }
    assert set(slices[date(2011, 9, 1)]) == {"all", "acquisition_month=2010-12"}
    row_counts = evaluations.groupby(["cohort_slice"], dropna=False)["row_count"].unique()
    assert set(row_counts["acquisition_month=2010-12"]) == {50, 100}
    assert set(row_counts["lifecycle=active"]) == {40}


def test_a_perfect_recency_rule_beats_the_candidate_and_is_chosen() -> None:
    frame, spec = prepared(make_snapshots(40, perfect_recency=True))
    result = backtest(frame, spec, TrainingConfig(backtest_cutoffs=3))
    means = result.mean_metrics()
    # the monotone rule maps days > 60 to exactly 1 and the rest to 0
    assert means[RECENCY_RULE]["roc_auc"] == pytest.approx(1.0)
    assert means[RECENCY_RULE]["log_loss"] < means[CANDIDATE]["log_loss"]
    selection = choose_published_model(means, "log_loss")
    assert selection.model == RECENCY_RULE
    assert "beats the candidate" in selection.reason


def test_an_unseen_category_at_scoring_time_is_scored() -> None:
    frame, spec = prepared(make_snapshots(60))
    model = fit_model(CANDIDATE, training_rows(frame, LAST_LABELLED), spec, TrainingConfig())
    latest = frame.loc[frame["as_of_date"] == frame["as_of_date"].max()].copy()
    latest["country"] = "Atlantis"
    probabilities = predict_churn(model, latest, spec)
    assert np.isfinite(probabilities).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    reference = driver_reference(training_rows(frame, LAST_LABELLED), spec)
    assert len(top_drivers(model, latest, spec, reference)) == len(latest)


def test_a_single_class_training_set_is_a_clear_error() -> None:
    raw = make_snapshots(30)
    raw["is_churned"] = raw["is_churned"].map(lambda value: None if value is None else True)
    frame, spec = prepared(raw)
    train = training_rows(frame, LAST_LABELLED)
    with pytest.raises(ModelError, match="all 180 labelled rows churned"):
        fit_model("rfm_logistic", train, spec, TrainingConfig())
    with pytest.raises(ModelError, match="no backtest cutoff could be evaluated"):
        backtest(frame, spec, TrainingConfig())


def test_column_order_does_not_change_predictions() -> None:
    raw = make_snapshots(60)
    shuffled_raw = raw[list(np.random.default_rng(3).permutation(raw.columns))]
    frame, spec = prepared(raw)
    shuffled, shuffled_spec = prepared(shuffled_raw)
    assert shuffled_spec == spec
    config = TrainingConfig()
    model = fit_model(CANDIDATE, training_rows(frame, LAST_LABELLED), spec, config)
    other = fit_model(CANDIDATE, training_rows(shuffled, LAST_LABELLED), spec, config)
    latest = frame.loc[frame["as_of_date"] == frame["as_of_date"].max()]
    reordered = latest[list(reversed(latest.columns))]
    expected = predict_churn(model, latest, spec)
    np.testing.assert_array_equal(predict_churn(model, reordered, spec), expected)
    np.testing.assert_array_equal(predict_churn(other, latest, spec), expected)


def test_drivers_of_the_recency_rule() -> None:
    frame, spec = prepared(make_snapshots(40, perfect_recency=True))
    train = training_rows(frame, LAST_LABELLED)
    model = fit_model(RECENCY_RULE, train, spec, TrainingConfig())
    reference = driver_reference(train, spec)
    assert reference["days_since_last_order"] > 60  # so the reference customer churns
    rows = train.iloc[:2].copy()
    rows["days_since_last_order"] = [5.0, 140.0]
    # 5 days: probability 0 instead of 1 at the reference; 140 days: 1 either way
    assert top_drivers(model, rows, spec, reference) == [
        ["days_since_last_order (-)", None, None],
        [None, None, None],
    ]


def test_risk_bands() -> None:
    bands = RiskBands(medium=0.4, high=0.7)
    assert list(bands.assign([0.0, 0.39, 0.4, 0.69, 0.7, 1.0])) == [
        "low",
        "low",
        "medium",
        "medium",
        "high",
        "high",
    ]
    with pytest.raises(ModelError, match="medium < high"):
        RiskBands(medium=0.8, high=0.5)


def _saved_model(tmp_path: Path) -> tuple[Path, pd.DataFrame, ModelBundle]:
    frame, spec = prepared(make_snapshots(60))
    train = training_rows(frame, LAST_LABELLED)
    bundle = ModelBundle(
        model_name=CANDIDATE,
        model=fit_model(CANDIDATE, train, spec, TrainingConfig()),
        spec=spec,
        driver_reference=driver_reference(train, spec),
    )
    saved = save_artifact(bundle, tmp_path, "run-1")
    assert saved.path == (tmp_path / "run-1" / "model.skops").resolve()
    return saved.path, frame.loc[frame["as_of_date"] == frame["as_of_date"].max()], bundle


def test_a_saved_model_scores_the_same_after_loading(tmp_path: Path) -> None:
    path, latest, bundle = _saved_model(tmp_path)
    loaded = load_artifact(path)
    assert loaded.spec == bundle.spec
    expected = score_rows(bundle, latest, RiskBands())
    pd.testing.assert_frame_equal(score_rows(loaded, latest, RiskBands()), expected)


def test_a_model_saved_under_other_versions_refuses_to_load(tmp_path: Path) -> None:
    path, _, _ = _saved_model(tmp_path)
    metadata_path = path.parent / METADATA_FILE
    metadata = json.loads(metadata_path.read_text())
    metadata["library_versions"]["scikit-learn"] = "0.24.2"
    metadata_path.write_text(json.dumps(metadata))
    current = library_versions()["scikit-learn"]
    with pytest.raises(ModelError, match=rf"scikit-learn 0\.24\.2 \(now {current}\)"):
        load_artifact(path)
    recorded = {**library_versions(), "numpy": "1.0.0"}
    with pytest.raises(ModelError, match=r"numpy 1\.0\.0"):
        load_artifact(path, recorded_versions=recorded)


def test_a_changed_model_file_refuses_to_load(tmp_path: Path) -> None:
    path, _, _ = _saved_model(tmp_path)
    with pytest.raises(ModelError, match="sha256"):
        load_artifact(path, expected_sha256="0" * 64)


def test_calibration_options() -> None:
    frame, spec = prepared(make_snapshots(60))
    one_snapshot = labelled(frame).loc[lambda rows: rows["as_of_date"] == "2011-01-01"]
    with pytest.raises(ModelError, match="at least two labelled snapshots"):
        fit_model(CANDIDATE, one_snapshot, spec, TrainingConfig())
    uncalibrated = fit_model(CANDIDATE, one_snapshot, spec, TrainingConfig(calibration="none"))
    assert np.isfinite(predict_churn(uncalibrated, one_snapshot, spec)).all()
    with pytest.raises(ModelError, match="calibration 'beta'"):
        fit_model(CANDIDATE, one_snapshot, spec, TrainingConfig(calibration="beta"))
