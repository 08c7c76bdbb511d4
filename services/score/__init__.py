"""score: a teacher score from the SQL evaluation."""

from services.score.step import ScoreParams, ScoreStep

__all__ = ["ScoreParams", "ScoreStep"]
