"""Example FastDistill plug-ins, one of each kind, registered by entry points (pyproject.toml):

- step `word_count` (word_count.py, its schema word_count.avsc),
- LLM client `echo` (echo.py): answers without a network, deterministically,
- sink format `csv` (csv_format.py),
- quality metric set `length` (length_metrics.py).
"""
