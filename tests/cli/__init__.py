"""Tests of precompute/cli that need the commands themselves: sharded runs and their merge."""
