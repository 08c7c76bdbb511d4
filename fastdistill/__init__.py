"""Composition root: the `fastdistill` CLI wires services (steps) to the shared runtime."""
