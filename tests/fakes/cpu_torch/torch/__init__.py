"""A CPU-only torch, as pip's CPU wheel reports itself (tests/bad_inputs.py): only what jobs.probe_torch reads."""

from types import SimpleNamespace

__version__ = "2.13.0+cpu"
version = SimpleNamespace(cuda=None)
cuda = SimpleNamespace(is_available=lambda: False, device_count=lambda: 0)
