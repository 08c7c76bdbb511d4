"""The seed row of the text-to-SQL example: what a producer may put on the seeds topic."""

from services.seeds.model import DecodeProfile, Seed

__all__ = ["DecodeProfile", "Seed"]
