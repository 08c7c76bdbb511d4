"""An OpenAI-compatible teacher simulator with seeded answers, latency and faults (see server.py)."""
