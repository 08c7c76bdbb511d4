"""sql_eval: run the teacher's SQL and the gold SQL (hostile input) in sandboxed worker processes."""

from services.sql_eval.pool import PoisonQuery
from services.sql_eval.step import SqlEvalParams, SqlEvalStep
from services.sql_eval.worker import normalise_rows, result_signature

__all__ = ["PoisonQuery", "SqlEvalParams", "SqlEvalStep", "normalise_rows", "result_signature"]
