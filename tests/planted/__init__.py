"""Planted-truth tests: inputs where the right answer is known by construction, and each analysis must find it."""
