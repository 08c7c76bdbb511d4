"""The teacher step: generations from an OpenAI-compatible server, cached, retried, rate-adapted."""

from services.teacher.limiter import AimdLimiter
from services.teacher.step import TeacherError, TeacherParams, TeacherStep

__all__ = ["AimdLimiter", "TeacherError", "TeacherParams", "TeacherStep"]
