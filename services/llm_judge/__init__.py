"""llm_judge: an LLM rates a response on a rubric, or ranks candidates."""
