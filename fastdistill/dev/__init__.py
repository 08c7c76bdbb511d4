"""Development tools kept apart from the runtime: the local broker and the teacher simulator."""
