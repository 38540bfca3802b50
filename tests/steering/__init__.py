"""Tests of precompute/steering: the intervention, sampling, labelling, the stage and its commands."""
