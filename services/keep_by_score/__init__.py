"""keep_by_score: keep a row only if it was kept so far and scored high enough."""

from services.keep_by_score.step import KeepByScoreParams, KeepByScoreStep

__all__ = ["KeepByScoreParams", "KeepByScoreStep"]
