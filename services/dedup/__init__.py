"""dedup: the first row with a key wins."""

from services.dedup.step import DedupParams, DedupStep

__all__ = ["DedupParams", "DedupStep"]
