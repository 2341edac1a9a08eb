"""Everything qwen-tune knows about ms-swift, in one package, so a move to the next ms-swift touches only here.

- `version`: the ms-swift releases qwen-tune supports (pyproject and the wheelhouse are checked against it).
- `command`: the argv and environment of `swift sft`, `swift infer` and `swift export`.
- `logs`: reading swift's output: progress lines, phase markers, logging.jsonl, out-of-memory and errors.
- `checkpoints`: where swift writes its checkpoints and logs, and how many it keeps.
- `infer`: `swift infer` started ahead of time, so its imports overlap training.
- `bytecode`: swift's imports compiled at install time where Python writes no bytecode, not in the first run.
"""
