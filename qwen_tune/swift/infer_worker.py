"""swift's inference, started before it is needed (swift.infer.PreloadedInfer): it imports swift while training runs.

Then it reads one request from stdin and sends its output to the request's log. End of input: nothing to do.

- {"args": [...], "log": PATH}: runs swift's own infer script, the one `swift infer` starts, with those arguments.
- {"probe": {...}, "args": [...], "log": PATH}: loads the model the way `swift infer` does (its SwiftInfer
  pipeline: base model, template and quantization from the adapter's args.json), then answers the questions
  greedily in that one load as training's own probe does (train_probe.answer_probes: adapter on and off, and a
  hybrid model's thinking questions with thinking on), and writes its answers to the probe's result path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import sys
import time


def main(argv: list[str]) -> int:
    from qwen_tune.swift.launch import die_with_parent, ignore_recorded_plugins, refuse_remote_code

    die_with_parent()  # no model load left on a card with nobody to report to, where qwen-tune was SIGKILLed
    if "--trust-remote-code" not in argv:  # as swift/launch.py: a model's own code stays off unless the user said so
        refuse_remote_code()
    ignore_recorded_plugins()
    from swift.pipelines import infer_main  # noqa: F401  the slow part: 13-15 s on the GPU box

    line = sys.stdin.readline()
    if not line:
        return 0  # training ended without a checkpoint to check
    request = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    if "probe" in request:
        probe(request["args"], **request["probe"])
        return 0
    script = importlib.util.find_spec("swift.cli.infer").origin
    sys.argv = [script, *request["args"]]
    runpy.run_path(script, run_name="__main__")
    return 0


def probe(args: list[str], result: str, **request) -> None:
    from swift.pipelines.infer.infer import SwiftInfer

    from qwen_tune.swift.train_probe import answer_probes  # the same passes as inside training

    start = time.monotonic()
    engine = SwiftInfer(args).infer_engine
    loaded = time.monotonic()
    answers = answer_probes(engine, engine.model, request)
    answers["seconds"]["load"] = round(loaded - start, 2)
    with open(result + ".tmp", "w", encoding="utf-8") as f:
        json.dump(answers, f, ensure_ascii=False)
    os.replace(result + ".tmp", result)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
