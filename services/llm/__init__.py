"""LLM clients (OpenAI-compatible, Anthropic Messages), the machinery every LLM step shares, and
the base of LLM steps."""
