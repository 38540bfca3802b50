"""Tests of precompute/demo: the demo corpus and the demo training run."""
