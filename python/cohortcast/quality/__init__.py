"""The data-quality gate: Great Expectations suites kept as code, a runner, a results writer.

The pipeline calls `run_gate(settings, step)` at its steps; see docs/quality.md.
"""

from cohortcast.quality.runner import (
    STEP_SUITES,
    ExpectationOutcome,
    GateResult,
    failure_message,
    run_gate,
)
from cohortcast.quality.suites import SUITES, Severity

__all__ = [
    "STEP_SUITES",
    "SUITES",
    "ExpectationOutcome",
    "GateResult",
    "Severity",
    "failure_message",
    "run_gate",
]
