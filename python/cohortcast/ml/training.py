"""The candidate churn model and the baselines it has to beat, fitted on snapshot rows.

Every model is a scikit-learn estimator that takes the prepared feature frame
(`dataset.feature_frame`) and selects its columns by name, so column order never matters:

- `candidate`: ColumnTransformer (numeric passthrough, one-hot categories that ignores
  categories unseen in training) into HistGradientBoostingClassifier, then a sigmoid
  calibration fitted on a later snapshot than the one the trees learnt from (held-out time,
  see docs/decisions/0002-modelling.md);
- `base_rate`: the training churn rate for everyone;
- `recency_rule`: churn probability as a monotone (isotonic, non-decreasing) function of
  `days_since_last_order`, fitted on the training rows;
- `rfm_logistic`: logistic regression on recency, frequency and monetary value.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from cohortcast.errors import ModelError
from cohortcast.ml.dataset import AS_OF_DATE, FeatureSpec, feature_frame, label_values

logger = logging.getLogger(__name__)

CANDIDATE = "candidate"
BASE_RATE = "base_rate"
RECENCY_RULE = "recency_rule"
RFM_LOGISTIC = "rfm_logistic"
BASELINES = (BASE_RATE, RECENCY_RULE, RFM_LOGISTIC)
MODEL_NAMES = (CANDIDATE, *BASELINES)


@dataclass(frozen=True)
class TrainingConfig:
    """Knobs of one training run. Defaults are the ones the demo uses."""

    label_window_days: int = 90
    backtest_cutoffs: int = 4
    min_slice_rows: int = 50
    selection_metric: str = "log_loss"
    # "sigmoid" or "isotonic": fitted on the latest training snapshot, which the trees do not
    # see; "none": trees on every training snapshot, no calibration step.
    calibration: str = "sigmoid"
    random_state: int = 0
    # Small trees: on the demo's backtest they beat 15-leaf trees (docs/modelling.md).
    max_iter: int = 150
    learning_rate: float = 0.05
    max_leaf_nodes: int = 7
    min_samples_leaf: int = 50
    l2_regularization: float = 1.0
    recency_feature: str = "days_since_last_order"
    frequency_feature: str = "order_count"
    monetary_feature: str | None = None
    # OpenMP threads for the trees; more than one spins and slows down on a busy machine.
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MonotoneRuleClassifier(ClassifierMixin, BaseEstimator):
    """Churn probability as a non-decreasing step function of one numeric input.

    Isotonic regression of the 0/1 label on the input: the best-fitting mapping that never
    says a longer gap since the last order means less risk.
    """

    def fit(self, X: Any, y: Any) -> MonotoneRuleClassifier:
        values = np.asarray(X, dtype=float).reshape(len(y), -1)[:, 0]
        labels = np.asarray(y, dtype=float)
        self.classes_ = np.array([0, 1])
        self.isotonic_ = IsotonicRegression(
            y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip"
        ).fit(values, labels)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        values = np.asarray(X, dtype=float)
        values = values.reshape(values.shape[0], -1)[:, 0]
        churn = np.clip(self.isotonic_.predict(values), 0.0, 1.0)
        return np.column_stack([1.0 - churn, churn])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)


def build_candidate(spec: FeatureSpec, config: TrainingConfig) -> Pipeline:
    """The gradient-boosted pipeline, unfitted. Early stopping is off: it would hold out
    random rows, not later snapshots."""
    transformers: list[tuple[str, Any, list[str]]] = []
    if spec.numeric:
        transformers.append(("numeric", "passthrough", list(spec.numeric)))
    if spec.categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float64)
        transformers.append(("categorical", encoder, list(spec.categorical)))
    return Pipeline(
        [
            ("features", ColumnTransformer(transformers, verbose_feature_names_out=False)),
            (
                "classifier",
                HistGradientBoostingClassifier(
                    max_iter=config.max_iter,
                    learning_rate=config.learning_rate,
                    max_leaf_nodes=config.max_leaf_nodes,
                    min_samples_leaf=config.min_samples_leaf,
                    l2_regularization=config.l2_regularization,
                    early_stopping=False,
                    random_state=config.random_state,
                ),
            ),
        ]
    )


def build_base_rate() -> DummyClassifier:
    """The training churn rate, whatever the features say."""
    return DummyClassifier(strategy="prior")


def build_recency_rule(recency_feature: str) -> Pipeline:
    select = ColumnTransformer(
        [("recency", SimpleImputer(strategy="median"), [recency_feature])],
        verbose_feature_names_out=False,
    )
    return Pipeline([("features", select), ("classifier", MonotoneRuleClassifier())])


def build_rfm_logistic(rfm: Sequence[str], config: TrainingConfig) -> Pipeline:
    """Logistic regression on asinh-compressed, standardised R, F and M (money is skewed and
    can be negative after returns, so asinh rather than log)."""
    numeric = Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("compress", FunctionTransformer(np.arcsinh, feature_names_out="one-to-one")),
            ("scale", StandardScaler()),
        ]
    )
    return Pipeline(
        [
            ("features", ColumnTransformer([("rfm", numeric, list(rfm))])),
            ("classifier", LogisticRegression(max_iter=1000, random_state=config.random_state)),
        ]
    )


def rfm_features(spec: FeatureSpec, config: TrainingConfig) -> tuple[str, ...]:
    """Recency, frequency and (when found) monetary columns for the logistic baseline."""
    for name in (config.recency_feature, config.frequency_feature):
        if name not in spec.numeric:
            raise ModelError(
                f"the snapshots have no numeric feature {name!r}, which the baselines need; "
                "add it to analytics.customer_feature_snapshots (docs/contracts.md)"
            )
    monetary = config.monetary_feature or _guess_monetary_feature(spec)
    if monetary is not None and monetary not in spec.numeric:
        raise ModelError(f"monetary feature {monetary!r} is not a numeric snapshot column")
    chosen = [config.recency_feature, config.frequency_feature]
    if monetary is not None:
        chosen.append(monetary)
    return tuple(chosen)


def _guess_monetary_feature(spec: FeatureSpec) -> str | None:
    """The lifetime money column: an `_amount` column, preferring net lifetime revenue."""
    amounts = [name for name in spec.numeric if name.endswith("_amount")]
    for hint in ("monetary", "lifetime", "total", "net_revenue", "revenue"):
        for name in amounts:
            if hint in name and "window" not in name and "_last_" not in name:
                return name
    return amounts[0] if amounts else None


def check_two_classes(labels: pd.Series, what: str) -> None:
    """A model needs churners and non-churners to learn from; say which one is missing."""
    counts = labels.value_counts()
    if len(counts) < 2:
        only = "churned" if int(counts.index[0]) == 1 else "stayed"
        raise ModelError(
            f"{what}: all {int(counts.iloc[0])} labelled rows {only}, so there is nothing to "
            "learn the difference from; use more snapshots (a longer history) or check the "
            "is_churned logic in dbt"
        )


CALIBRATION_METHODS = ("sigmoid", "isotonic", "none")


def fit_candidate(train: pd.DataFrame, spec: FeatureSpec, config: TrainingConfig) -> Any:
    """Fit the trees on every training snapshot but the latest, calibrate on the latest.

    The calibration rows are a later point in time than anything the trees saw, never
    training rows. With `calibration="none"` the trees learn from every snapshot instead.
    """
    if config.calibration not in CALIBRATION_METHODS:
        raise ModelError(
            f"calibration {config.calibration!r} is not one of {', '.join(CALIBRATION_METHODS)}"
        )
    if config.calibration == "none":
        return build_candidate(spec, config).fit(feature_frame(train, spec), label_values(train))
    dates = sorted(train[AS_OF_DATE].unique())
    if len(dates) < 2:
        raise ModelError(
            "the candidate needs at least two labelled snapshots before the cutoff (one to "
            f"learn from, a later one to calibrate on); found {len(dates)}"
        )
    calibration_date = dates[-1]
    fit_rows = train.loc[train[AS_OF_DATE] < calibration_date]
    calibration_rows = train.loc[train[AS_OF_DATE] == calibration_date]
    fit_labels = label_values(fit_rows)
    calibration_labels = label_values(calibration_rows)
    check_two_classes(fit_labels, "candidate training rows")
    check_two_classes(calibration_labels, "candidate calibration rows")
    trees = build_candidate(spec, config).fit(feature_frame(fit_rows, spec), fit_labels)
    calibrated = CalibratedClassifierCV(FrozenEstimator(trees), method=config.calibration)
    calibrated.fit(feature_frame(calibration_rows, spec), calibration_labels)
    logger.debug(
        "candidate: trees on %d rows before %s, %s calibration on %d rows at %s",
        len(fit_rows),
        pd.Timestamp(calibration_date).date(),
        config.calibration,
        len(calibration_rows),
        pd.Timestamp(calibration_date).date(),
    )
    return calibrated


def fit_model(name: str, train: pd.DataFrame, spec: FeatureSpec, config: TrainingConfig) -> Any:
    """Fit one named model (candidate or a baseline) on `train`."""
    labels = label_values(train)
    check_two_classes(labels, f"{name} training rows")
    if name == CANDIDATE:
        return fit_candidate(train, spec, config)
    features = feature_frame(train, spec)
    if name == BASE_RATE:
        return build_base_rate().fit(features, labels)
    if name == RECENCY_RULE:
        return build_recency_rule(rfm_features(spec, config)[0]).fit(features, labels)
    if name == RFM_LOGISTIC:
        return build_rfm_logistic(rfm_features(spec, config), config).fit(features, labels)
    raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


def fit_all(train: pd.DataFrame, spec: FeatureSpec, config: TrainingConfig) -> dict[str, Any]:
    """The candidate and every baseline, fitted on the same rows."""
    return {name: fit_model(name, train, spec, config) for name in MODEL_NAMES}


def predict_churn(model: Any, frame: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
    """Churn probability (class 1) for each row of `frame`."""
    probabilities = model.predict_proba(feature_frame(frame, spec))
    classes = list(model.classes_)
    return np.asarray(probabilities[:, classes.index(1)], dtype=float)
