"""chat_generation: the next assistant turn of a multi-turn conversation."""
