"""text_generation: one prompt template, one or more generations per row."""
