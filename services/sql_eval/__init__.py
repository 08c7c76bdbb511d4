"""sql_eval: run the teacher's SQL (hostile input) against a read-only SQLite database."""

from services.sql_eval.step import SqlEvalParams, SqlEvalStep, normalise_rows, result_signature

__all__ = ["SqlEvalParams", "SqlEvalStep", "normalise_rows", "result_signature"]
