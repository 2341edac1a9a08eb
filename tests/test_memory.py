"""The estimator against the measured runs it is calibrated on (shared/measurements, 2026-11-22)."""

import pytest

from qwen_tune.gpus import GIB
from qwen_tune.memory import TrainSetup, estimate
from qwen_tune.models import BUILTIN_SHAPES

QWEN25_7B = BUILTIN_SHAPES["qwen/qwen2.5-7b-instruct"]
LONGEST = 77  # tokens of the longest of the 50 measured samples (64±7 after the qwen2_5 template)

# (setup, measured GiB reserved by torch as swift logs it, measured NVML peak MiB or None)
MEASURED = [
    (TrainSetup(QWEN25_7B, 8, 1, LONGEST, True, "bf16"), 14.67, 15797),  # A: 1×16, checkpointing
    (TrainSetup(QWEN25_7B, 8, 16, LONGEST, False, "bf16"), 25.92, 27319),  # B: 16×1, no checkpointing
    (TrainSetup(QWEN25_7B, 8, 1, LONGEST, True, "nf4"), 5.83, 6747),  # Q: QLoRA NF4
    (TrainSetup(QWEN25_7B, 8, 8, LONGEST, False, "bf16", n_gpus=2, zero_stage=2), 20.35, None),  # D
    (TrainSetup(QWEN25_7B, 8, 8, LONGEST, False, "bf16", n_gpus=2, zero_stage=3), 17.21, None),  # E
]


@pytest.mark.parametrize("setup, reserved_gib, nvml_mib", MEASURED)
def test_estimate_within_5_percent_of_measured(setup, reserved_gib, nvml_mib):
    est = estimate(setup)
    assert est.reserved_bytes / GIB == pytest.approx(reserved_gib, rel=0.05)
    if nvml_mib:
        assert est.peak_bytes / 2**20 == pytest.approx(nvml_mib, rel=0.05)


def test_qwen3_14b_zero3_does_not_fit_22_5_gib():
    """Measured: swift's zero3 preset ran out of memory at 22.5 GiB/GPU in the first forward."""
    shape = BUILTIN_SHAPES["qwen/qwen3-14b"]
    est = estimate(TrainSetup(shape, 8, 1, LONGEST, True, "bf16", n_gpus=2, zero_stage=3))
    assert est.reserved_bytes > 22.5 * GIB


def test_breakdown_sums_and_grows_with_batch():
    small = estimate(TrainSetup(QWEN25_7B, 8, 1, 512, False, "bf16"))
    big = estimate(TrainSetup(QWEN25_7B, 8, 4, 512, False, "bf16"))
    assert small.reserved_bytes == sum(b for _, b in small.items)
    assert big.reserved_bytes > small.reserved_bytes
    checkpointed = estimate(TrainSetup(QWEN25_7B, 8, 4, 512, True, "bf16"))
    assert checkpointed.reserved_bytes < big.reserved_bytes


def test_parameter_counts_match_published_models():
    assert QWEN25_7B.n_params == 7_615_616_512
    assert QWEN25_7B.lora_params(8) == 20_185_088  # swift: 20.1851M trainable
    assert BUILTIN_SHAPES["qwen/qwen3-14b"].n_params == pytest.approx(14.77e9, rel=0.001)
    assert BUILTIN_SHAPES["qwen/qwen2.5-0.5b-instruct"].n_params == 494_032_768
