"""canonicalize: the chosen fields of a row as one canonical JSON string."""

from services.canonicalize.step import CanonicalizeParams, CanonicalizeStep, canonical_json

__all__ = ["CanonicalizeParams", "CanonicalizeStep", "canonical_json"]
