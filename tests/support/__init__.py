"""Helpers the tests, benchmarks and docs scripts share; not part of the installed packages."""
