"""A stand-in for bitsandbytes: only its version is read (tests/bad_inputs.py)."""

__version__ = "0.50.2"
