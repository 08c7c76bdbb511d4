"""filter_by_bool: drop rows whose boolean field is not the wanted value."""

from services.filter_by_bool.step import FilterByBoolParams, FilterByBoolStep

__all__ = ["FilterByBoolParams", "FilterByBoolStep"]
