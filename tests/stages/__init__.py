"""Tests of precompute/stages and the pipeline that orders them, and whole runs end to end."""
