"""The speed tools' pure parts (tools/, tools/probes/): what they parse and compare must be right before a GPU call spends on them."""

import json
from pathlib import Path

import pytest
from conftest import load_script


def write_log(path: Path, losses: dict[int, float], total: int) -> Path:
    path.write_text(
        "".join(json.dumps({"loss": loss, "global_step/max_steps": f"{step}/{total}"}) + "\n" for step, loss in losses.items())
    )
    return path


def test_window_loss_compares_runs_that_log_at_different_intervals(tmp_path):
    bench = load_script("bench")
    every_step = write_log(tmp_path / "a.jsonl", {s: float(s) for s in range(1, 41)}, 40)
    every_five = write_log(
        tmp_path / "b.jsonl", {1: 1.0, 5: 3.0, 10: 8.0, 40: 38.0}, 40
    )  # swift logs the mean since the last log
    assert bench.window_loss(every_step) == pytest.approx((36 + 37 + 38 + 39 + 40) / 5)
    assert bench.window_loss(every_five) == 38.0
    assert bench.window_loss(write_log(tmp_path / "c.jsonl", {38: 1.0, 40: 2.0}, 40)) is None  # neither: not comparable


def test_startup_probe_sums_import_time_by_package():
    probe = load_script("probes/startup_probe")
    importtime = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:      1000 |       1000 |     torch._C\n"
        "import time:      2000 |       3000 |   torch\n"
        "import time:    500000 |     500000 |       sympy.core\n"
        "import time:       100 |     503100 | swift.pipelines\n"
    )
    assert probe.by_package(importtime) == [("sympy", 0.5), ("torch", 0.003), ("swift", 0.0001)]


def test_speed_variants_change_or_add_flags_and_keep_the_rest():
    variants = load_script("probes/speed_variants")
    argv = ["swift", "sft", "--attn_impl", "sdpa", "--output_dir", "a"]
    assert variants.with_flags(argv, {"--attn_impl": "eager", "--save_strategy": "no"}) == [
        "swift", "sft", "--attn_impl", "eager", "--output_dir", "a", "--save_strategy", "no"]  # fmt: skip
    assert argv[3] == "sdpa"


def test_speed_reads_real_tokens_and_params_from_swifts_log(tmp_path):
    bench = load_script("bench")
    log = tmp_path / "swift.log"
    log.write_text(
        "[INFO:swift] args: SftArguments(num_train_epochs=10.0, ...)\n"
        "[INFO:swift] Dataset Token Length: 52.020000±9.636369, min=38.000000, max=87.000000, size=100\n"
        "[INFO:swift] model_parameter_info: PeftModelForCausalLM: 7635.8016M Params (20.1851M Trainable [0.2643%]), 0.0001M Buffers.\n"
    )
    got = bench.speed(log, 37.0651)
    assert got["train_tokens"] == 52020 and got["tokens_per_second"] == 1403
    assert got["mfu_6n"] == pytest.approx(6 * 7635.8016e6 * 52020 / 37.0651 / 989e12, abs=1e-4)
