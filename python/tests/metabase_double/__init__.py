"""A local Metabase API double for the tests (see server.py)."""

from .server import MetabaseDouble, RecordedRequest, SavedResult, recorded, running_double

__all__ = ["MetabaseDouble", "RecordedRequest", "SavedResult", "recorded", "running_double"]
