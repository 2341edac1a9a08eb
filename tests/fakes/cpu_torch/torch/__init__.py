"""A CPU-only torch, as pip's CPU wheel reports itself (tools/bad_inputs.py): jobs.read_torch reads version.py."""

__version__ = "2.13.0+cpu"
