"""Churn modelling on dbt's feature snapshots: train, backtest, choose, score, publish.

The pipeline calls `train`, `score` or `train_and_publish`; the modules below them are split
by job: `dataset` (reading snapshots), `training` (candidate and baselines), `evaluation`
(backtest, metrics, model choice), `registry` (runs and artifacts), `scoring` (predictions,
drivers, atomic publish) and `drift` (population stability).
"""

from cohortcast.ml.scoring import RiskBands
from cohortcast.ml.training import TrainingConfig
from cohortcast.ml.workflow import (
    RunSummary,
    ScoreResult,
    ScoringConfig,
    TrainResult,
    score,
    train,
    train_and_publish,
)

__all__ = [
    "RiskBands",
    "RunSummary",
    "ScoreResult",
    "ScoringConfig",
    "TrainResult",
    "TrainingConfig",
    "score",
    "train",
    "train_and_publish",
]
