"""The run's pictures from plain numbers: loss.png's title, log axis and epoch marks; memory.png's lines."""

import json
from pathlib import Path

from qwen_tune.machine.gpus import GIB
from qwen_tune.running.plot import loss_figure, loss_title, memory_figure, save
from qwen_tune.swift.logs import epoch_ends, logged_losses


def test_a_loss_spanning_decades_gets_a_log_axis_a_title_and_epoch_marks(tmp_path):
    steps, losses = [1, 2, 3, 4, 5, 6], [5.0, 2.0, 0.5, 0.1, 0.05, 0.02]
    title = loss_title("demo-tiny-cpu", "lora-fast", 0.02)
    fig = loss_figure(steps, losses, [3.0], title)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert ax.get_title() == "demo-tiny-cpu · lora-fast · final loss 0.02"
    assert [line.get_xdata()[0] for line in ax.lines[1:]] == [3.0]  # the epoch mark
    save(fig, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_a_loss_within_one_decade_stays_linear():
    (ax,) = loss_figure([1, 2, 3], [2.0, 1.5, 0.9], [], loss_title("r", "p", None)).axes
    assert ax.get_yscale() == "linear" and ax.get_title().endswith("no final loss")


def test_epoch_ends_are_read_from_swifts_log(tmp_path):
    log = tmp_path / "logging.jsonl"
    records = [{"loss": 3.0 - s / 10, "global_step/max_steps": f"{s}/8", "epoch": s / 4} for s in range(1, 9)]
    log.write_text("".join(json.dumps(r) + "\n" for r in [*records, {"train_runtime": 9.0, "epoch": 2.0}]))
    assert epoch_ends(log) == [4.0]  # the end of the last epoch is the last step: no mark
    assert logged_losses(log)[0] == (1, 2.9)


def test_epoch_ends_between_logged_steps_are_interpolated(tmp_path):
    log = tmp_path / "logging.jsonl"
    log.write_text("".join(json.dumps({"loss": 1.0, "global_step/max_steps": f"{s}/9", "epoch": e}) + "\n"
                           for s, e in [(3, 0.6), (6, 1.2), (9, 1.8)]))  # fmt: skip
    assert epoch_ends(log) == [5.0]


def test_memory_figure_draws_each_gpu_and_the_estimate(tmp_path):
    samples = {0: [(0.0, 1 * GIB), (1.0, 10 * GIB)], 1: [(0.0, 1 * GIB), (1.0, 12 * GIB)]}
    fig = memory_figure(samples, 14.5, "run")
    (ax,) = fig.axes
    gpu0, gpu1, estimate = ax.lines
    assert list(gpu1.get_ydata()) == [1.0, 12.0] and list(estimate.get_ydata()) == [14.5, 14.5]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["GPU 0", "GPU 1", "plan's estimate 14.50 GiB"]
    save(fig, tmp_path / "memory.png")
    assert (tmp_path / "memory.png").is_file()


def test_the_run_titles_loss_png_with_its_recipe_profile_and_final_loss(tmp_path, monkeypatch):
    from qwen_tune.running import attempts, plot
    from qwen_tune.running.rundir import RunRecord

    (tmp_path / "swift").mkdir()
    (tmp_path / "swift" / "logging.jsonl").write_text(
        json.dumps({"loss": 0.5, "global_step/max_steps": "1/1", "epoch": 1.0}) + "\n"
    )
    record = RunRecord(tmp_path, plan_for("cpu"), verify=False)
    titles = []
    monkeypatch.setattr(attempts, "loss_title", lambda *args: titles.append(args) or plot.loss_title(*args))
    assert attempts.loss_curve(record, 0.5, tmp_path / "loss.png") and (tmp_path / "loss.png").is_file()
    assert titles == [("demo-tiny-cpu", "cpu", 0.5)]
    assert not attempts.loss_curve(RunRecord(tmp_path / "none", record.plan, verify=False), None, tmp_path / "x.png")


def plan_for(gpus: str):
    """The demo recipe's plan on the tiny model's config, for the CPU or a card."""
    from conftest import PLAIN_MACHINE

    from qwen_tune.planning.jobs import JobOptions, prepare

    tiny = str(Path(__file__).parent / "data" / "tiny-config")
    return prepare(JobOptions(recipe="demo-tiny-cpu", model=tiny, gpus=gpus), PLAIN_MACHINE, for_run=False).plan


def test_memory_png_is_drawn_for_gpu_runs_with_samples_only(tmp_path):
    from qwen_tune.running.process import memory_picture
    from qwen_tune.running.rundir import RunRecord

    gpu = RunRecord(tmp_path, plan_for("rtx4090"), verify=False)
    assert not memory_picture(gpu, {})  # NVML gave no sample
    assert not memory_picture(RunRecord(tmp_path, plan_for("cpu"), verify=False), {0: [(0.0, GIB)]})  # the CPU
    assert not (tmp_path / "memory.png").exists()
    assert memory_picture(gpu, {0: [(0.0, GIB), (0.5, 3 * GIB)]}) and (tmp_path / "memory.png").is_file()
