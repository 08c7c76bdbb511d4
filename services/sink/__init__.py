"""Writing a released run's rows as deterministic dataset files."""
