"""Before the first step: each phase as it ends, the download as it grows, and what a silence waits on (fake clock)."""

import io
from pathlib import Path

from qwen_tune.machine.gpus import GIB
from qwen_tune.report import ProgressLine
from qwen_tune.running.phases import StartupWatch, hub_cache, tree_bytes
from qwen_tune.swift.command import sft_argv
from qwen_tune.swift.logs import Progress, phase_ended


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_hub_model_download_is_shown_growing_then_each_phase():
    clock, cache = Clock(), {"bytes": 2 * GIB}  # something was cached before
    watch = StartupWatch(clock, lambda: cache["bytes"], "/c/modelscope/hub", model_bytes=int(15.2 * GIB))
    assert watch.saw(phase_ended("[INFO:swift] rank: -1, local_rank: -1")) == [
        "swift: swift imported (0 s); now downloading the model if it is not cached, then loading it"
    ]
    clock.now += 5
    cache["bytes"] += 1 * GIB
    assert watch.tick() == []  # less than 10 s since it last said something
    clock.now += 5
    assert watch.tick() == ["downloading the model into /c/modelscope/hub: 1.00 GiB of about 15.2 GiB so far, 102 MiB/s"]
    clock.now += 10
    assert watch.tick() == []  # nothing grew, and 10 s is no long silence
    clock.now += 20
    assert watch.tick() == ["no output from swift for 40 s: it is downloading the model if it is not cached, then loading it"]
    assert watch.saw(phase_ended("[INFO:swift] model_info: ModelInfo(...)")) == [
        "swift: model loaded (40 s); now tokenizing the dataset"
    ]
    assert watch.saw([], step=True) == [] and watch.training
    clock.now += 100
    assert watch.tick() == []  # the step bar speaks from here on


def test_a_local_model_is_only_loaded_and_silences_are_named():
    clock = Clock()
    watch = StartupWatch(clock)
    clock.now += 29
    assert watch.tick() == []
    clock.now += 1
    assert watch.tick() == ["no output from swift for 30 s: it is importing swift and its stack (torch, transformers; 10-30 s)"]
    clock.now += 10
    assert watch.tick() == []  # said once per 30 s of silence
    assert watch.saw(phase_ended("[INFO:swift] rank: 0")) == ["swift: swift imported (40 s); now loading the model"]


def test_hub_caches(tmp_path):
    assert hub_cache({"MODELSCOPE_CACHE": "/m"}, use_hf=False) == Path("/m")
    assert hub_cache({"HF_HOME": "/h"}, use_hf=True) == Path("/h/hub")
    assert hub_cache({"HF_HOME": "/h", "HF_HUB_CACHE": "/hc"}, use_hf=True) == Path("/hc")
    assert tree_bytes(tmp_path / "none") == 0
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "part.incomplete").write_bytes(b"x" * 1000)
    assert tree_bytes(tmp_path) == 1000


def test_progress_line_prints_phases_and_steps():
    out = io.StringIO()
    line = ProgressLine(out)
    line("swift: model loaded (40 s); now tokenizing the dataset")
    line(Progress(step=1, total=2, loss=1.5))
    assert out.getvalue().splitlines()[0] == "swift: model loaded (40 s); now tokenizing the dataset"
    assert out.getvalue().splitlines()[1].startswith("step 1/2  loss 1.5000")


def test_hub_flag_becomes_swifts_use_hf_for_a_hub_id_only():
    from conftest import FIXED_NOW, PLAIN_MACHINE

    from qwen_tune.planning.jobs import JobOptions, prepare

    def argv(**flags):
        return sft_argv(
            prepare(JobOptions(output_dir="runs", gpus="h100", **flags), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan
        )

    assert "--use_hf" not in argv()  # swift's default
    hf = argv(hub="hf")
    assert hf[hf.index("--use_hf") + 1] == "true"
    ms = argv(hub="modelscope")
    assert ms[ms.index("--use_hf") + 1] == "false"
    tiny = str(Path(__file__).parent / "data" / "tiny-config")
    assert "--use_hf" not in argv(hub="hf", model=tiny, recipe="demo-tiny-cpu")  # a local directory downloads nothing
