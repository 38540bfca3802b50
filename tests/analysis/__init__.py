"""Tests of precompute/analysis: experts, alignment, LAPE, probes, similarity, chance levels, drill-downs."""
