"""rule_filter: mark rows whose text is empty, too short or too long."""

from services.rule_filter.step import RuleFilterParams, RuleFilterStep

__all__ = ["RuleFilterParams", "RuleFilterStep"]
