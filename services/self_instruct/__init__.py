"""self_instruct: new instructions generated from a context (Self-Instruct)."""
