"""Exception types the CLI turns into one clear line and a non-zero exit.

Every message says what went wrong and what to do next; none carries a password,
a DSN secret or an API key.
"""


class CohortcastError(Exception):
    """Base class for errors a person running the pipeline can act on."""

    step: str | None = None

    def __init__(self, message: str, *, step: str | None = None) -> None:
        super().__init__(message)
        if step is not None:
            self.step = step


class ConfigError(CohortcastError):
    """Settings are missing or inconsistent."""


class WarehouseError(CohortcastError):
    """The Postgres server cannot be reached or used."""


class EmbeddedServerError(WarehouseError):
    """The embedded Postgres could not be started."""


class DataError(CohortcastError):
    """Input data is missing, malformed or does not have the expected shape."""


class DbtError(CohortcastError):
    """A dbt command failed."""


class QualityGateError(CohortcastError):
    """A blocking data-quality expectation failed."""


class ModelError(CohortcastError):
    """Training, evaluation or scoring cannot proceed."""


class MetabaseError(CohortcastError):
    """Metabase answered with an error or could not be reached."""
