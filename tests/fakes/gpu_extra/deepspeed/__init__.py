"""A stand-in for deepspeed: only its version is read (tests/bad_inputs.py)."""

__version__ = "0.19.8"
