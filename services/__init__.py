"""The FastDistill step catalogue: one sub-package per step, each a pure `Step` plus its params."""
