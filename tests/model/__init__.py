"""Tests of precompute/model and precompute/extract.py: loading, MLP sites, the layout, extraction, the logit lens."""
