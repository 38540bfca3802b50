"""Reliability: kill and resume, readers and writers, determinism, bad and hostile input, safe sharing."""
