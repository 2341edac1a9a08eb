"""The ms-swift releases qwen-tune supports: written once here; pyproject.toml and the wheelhouse are tested against it.

4.6 renamed `--train_type` to `--tuner_type` and pins peft<0.21, trl<1.0, datasets<4.8.5, transformers<5.20.
"""

from __future__ import annotations

SUPPORTED = ">=4.6,<4.7"
REQUIREMENT = f"ms-swift{SUPPORTED}"
INSTALL = f"pip install '{REQUIREMENT}'"
