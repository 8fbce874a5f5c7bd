"""suanli (算力): run a public AI compute center."""

__version__ = "0.1.0"
