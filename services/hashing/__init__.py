"""hash: a SHA-256 identity for a row from a few of its fields."""

from services.hashing.step import HashParams, HashStep

__all__ = ["HashParams", "HashStep"]
