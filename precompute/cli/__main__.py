"""``python -m precompute.cli``: the same command line as the ``precompute`` script."""

from precompute.cli import app

app()
