"""Runnable examples, each asserting its own results (see examples/ at the top of the repo)."""
