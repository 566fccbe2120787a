"""Per-example learning dynamics under SimCLR, supervised and random-label training."""

__version__ = "0.1.0"
