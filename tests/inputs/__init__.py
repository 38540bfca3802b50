"""Tests of what a run is given: the run config, concept sets, corpora, checkpoint resolution."""
