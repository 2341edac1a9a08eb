"""qwen-tune: plan, run and verify LoRA fine-tuning of Qwen models with ms-swift."""

import time

__version__ = "0.1.0"
STARTED = time.monotonic()  # the process's start, near enough (its first import): timeline.json counts from here
