"""`swift infer`, started before it is needed (swift.infer.PreloadedInfer): it imports swift while training runs.

Then it reads one request from stdin, {"args": [...], "log": PATH}, sends its output to the log and runs
swift's own infer script, the one `swift infer` starts, with those arguments. End of input: nothing to do.
"""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import sys


def main() -> int:
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
    script = importlib.util.find_spec("swift.cli.infer").origin
    sys.argv = [script, *request["args"]]
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
