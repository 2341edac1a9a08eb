"""torch/version.py of pip's CPU wheel, as far as jobs.read_torch reads it."""

__version__ = "2.13.0+cpu"
cuda = None
