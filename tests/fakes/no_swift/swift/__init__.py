"""Hides ms-swift from a Python that has it (tools/bad_inputs.py): first on PYTHONPATH, a `swift` with no cli/main.py,
so qwen_tune.swift.command.swift_cli_dir finds none."""
