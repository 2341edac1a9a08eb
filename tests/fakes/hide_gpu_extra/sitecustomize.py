"""A box without qwen-tune[gpu]: deepspeed and bitsandbytes look uninstalled, whatever this Python has.

tests/bad_inputs.py puts this folder on PYTHONPATH; Python imports sitecustomize at start-up.
"""

import importlib.abc
import importlib.metadata
import sys

HIDDEN = {"deepspeed", "bitsandbytes"}
_version = importlib.metadata.version


def version(name):
    if name.lower().replace("_", "-") in HIDDEN:
        raise importlib.metadata.PackageNotFoundError(name)
    return _version(name)


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


importlib.metadata.version = version
sys.meta_path.insert(0, _Hide())
