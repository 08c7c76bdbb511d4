"""The coordinator's pure aggregates: manifest, quality, timing, gates and the per-run state.

Everything here is incremental (rows and progress records are folded in one at a time),
mergeable and JSON-serialisable, so the coordinator service can snapshot a run into a
compacted topic after every transaction and resume it after a crash with identical results.
"""
