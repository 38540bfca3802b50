"""Tests of explorer/: queries, the notebook API, every page under AppTest, the launcher, the real-browser checks."""
