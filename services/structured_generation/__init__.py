"""structured_generation: JSON answers validated against a JSON schema."""
