"""clean_sql: the first SQL statement in a teacher's free-form answer."""

from services.clean_sql.step import CleanSqlParams, CleanSqlStep, extract_sql

__all__ = ["CleanSqlParams", "CleanSqlStep", "extract_sql"]
