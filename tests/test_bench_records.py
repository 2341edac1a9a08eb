"""The estimator against every benchmark recorded on a real GPU (docs/bench-results.jsonl)."""

import json
from pathlib import Path

import pytest

from qwen_tune.gpus import GIB
from qwen_tune.memory import TrainSetup, estimate
from qwen_tune.models import ModelShape

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "bench-results.jsonl"
RECORDS = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
# Measured, not yet explained: see docs/hardware-validation.md ("What is not calibrated yet").
KNOWN_MISSES = {"7b-auto": "micro-batch 16 over mixed lengths reserves 3.6 GiB more than estimated"}


def setup_of(record: dict) -> TrainSetup:
    s = record["setup"]
    weights = "nf4" if s["quantization"] == "nf4" else {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[s["dtype"]]
    return TrainSetup(
        shape=ModelShape(**s["shape"]),
        lora_rank=s["lora_rank"],
        micro_batch_size=s["micro_batch_size"],
        seq_len=s["seq_len"],
        gradient_checkpointing=s["gradient_checkpointing"],
        weights=weights,
        n_gpus=s["n_gpus"],
        zero_stage={"": 0, "zero2": 2, "zero3": 3}[s["zero"]],
    )


@pytest.mark.parametrize("record", RECORDS, ids=[r["case"] for r in RECORDS])
def test_estimate_within_5_percent_of_the_bench(record):
    if record["case"] in KNOWN_MISSES:
        pytest.xfail(KNOWN_MISSES[record["case"]])
    measured = record["swift_peak_reserved_gib"]
    assert estimate(setup_of(record)).reserved_bytes / GIB == pytest.approx(measured, rel=0.05)


@pytest.mark.parametrize("record", RECORDS, ids=[r["case"] for r in RECORDS])
def test_every_profile_fit_its_card_and_passed(record):
    assert record["status"] == "done" and record["identity_check"] == "pass"
    if record["cap_gib"]:
        assert record["swift_peak_reserved_gib"] <= record["cap_gib"]
