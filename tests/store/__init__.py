"""Tests of precompute/store: the schema, the writer, checkpoint parts, the run's facts, the store's own guarantees."""
