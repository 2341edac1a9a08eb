"""qwen-tune: plan, run and verify LoRA fine-tuning of Qwen models with ms-swift."""

__version__ = "0.1.0"
