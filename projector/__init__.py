"""The projector: the write side of ClickHouse.

Pure core: fold.py (a batch of events plus prior state -> rows). Shell: service.py (journal the
batch, insert idempotently, commit offsets) and replay.py (after a restart, re-cut the journaled batch
exactly as it was)."""
