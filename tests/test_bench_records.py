"""The benchmarks recorded on real GPUs (docs/bench-results.jsonl), and the estimator against them.

test_estimate_* runs qwen-tune's memory estimator on each record's setup: a behaviour test. Every
test_data_* only reads the recorded JSON: a data check on what was measured (every profile fit and
passed, the ladder recovered...), which no change to the code can break; only a new or edited
record can. tools/bench.py's own parsing is tested in tests/test_probes.py."""

import json
from pathlib import Path

import pytest

from qwen_tune.machine.gpus import GIB
from qwen_tune.planning.memory import estimate, recorded_setup

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "bench-results.jsonl"
RECORDS = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
BY_CASE = {r["case"]: r for r in RECORDS}
# Cases about training itself (resume, fp16, the blog's command) skip the identity check to save GPU time.
TRAINING_ONLY = {"7b-resume", "7b-fp16", "7b-blog-50", "0.5b-full", "1.5b-full-24gb", "7b-2000", "7b-2000-24gb", "7b-real",
                 "7b-real-padded", "7b-real-24gb", "7b-real-unsloth", "7b-real-24gb-unsloth"}  # fmt: skip
PEERS = {"blog", "unsloth"}  # the blog's command and the peers beside us: no plan of ours to estimate
OURS = [r for r in RECORDS if r.get("profile") not in PEERS]
# Issue 22: from the session that measured packed rows on (2026-12-05), every bench case's estimate is within
# -2% / +8% of swift's peak. The records before it sit within -2.2% / +8.0% (7b-16gb, 0.5b-full: docs/).
BAND_SINCE = "2026-12-05"


@pytest.mark.parametrize("record", OURS, ids=[r["case"] for r in OURS])
def test_estimate_never_under_the_bench_by_more_than_2_percent(record):
    measured = record["swift_peak_reserved_gib"]
    error = estimate(recorded_setup(record["setup"])).reserved_bytes / GIB / measured - 1
    low, high = (-0.02, 0.08) if record["date"] >= BAND_SINCE else (-0.025, 0.085)
    assert low <= error <= high, f"{100 * error:+.1f}%"


# Qwen3-30B-A3B: `all-linear` adapts only attention in its MoE layers (docs/models.md); with random weights it
# did not learn the identity in the 50-row job's 40 steps (loss 6.78). The case checks the estimator.
IDENTITY_NOT_LEARNED = {"30b-a3b"}


@pytest.mark.parametrize("record", RECORDS, ids=[r["case"] for r in RECORDS])
def test_data_every_profile_fit_its_card_and_passed(record):
    assert record["status"] == "done"
    expected = "skipped" if record["case"] in TRAINING_ONLY else "fail" if record["case"] in IDENTITY_NOT_LEARNED else "pass"
    assert record["identity_check"] == expected
    if record["cap_gib"]:
        assert record["swift_peak_reserved_gib"] <= record["cap_gib"]


def test_data_every_profile_of_the_bench_was_measured():
    assert {"7b-auto", "7b-24gb", "7b-16gb", "7b-qlora", "14b-auto", "14b-qlora"} <= BY_CASE.keys()


def test_data_profiles_for_smaller_cards_learn_the_same_model():
    """Issue 4: the same recipe gives the same model on every card, final loss within 10% of the 24gb profile's."""
    reference = BY_CASE["7b-24gb"]["final_loss"]
    for case in ("7b-auto", "7b-16gb", "7b-qlora", "7b-ladder", "7b-fp16"):
        assert BY_CASE[case]["final_loss"] == pytest.approx(reference, rel=0.10), case


def test_data_ladder_recovered_from_a_real_out_of_memory():
    attempts = BY_CASE["7b-ladder"]["attempts"]
    assert attempts[0]["outcome"] == "out-of-memory" and "ran out of memory" in attempts[0]["error"]
    assert attempts[-1]["outcome"] == "done" and attempts[-1]["micro_batch_size"] < attempts[0]["micro_batch_size"]


def test_data_run_killed_half_way_and_resumed_ends_at_the_same_loss():
    resumed, uninterrupted = BY_CASE["7b-resume"], BY_CASE["7b-auto"]
    assert resumed["resumed_from"] and "SIGTERM" in resumed["attempts"][0]["error"]
    assert resumed["last_epoch_loss"] == pytest.approx(uninterrupted["last_epoch_loss"], rel=0.02)
    assert resumed["final_loss"] == pytest.approx(uninterrupted["final_loss"], rel=0.02)


def test_data_qwen_tunes_choice_trains_the_blogs_job_faster_to_the_same_loss():
    """Issue 5, same box and session: the blog's command against qwen-tune's plan, loss compared over the same steps."""
    blog = BY_CASE["7b-blog-50"]
    ours = [r for r in RECORDS if r["case"] == "7b-auto-50" and r["date"] == blog["date"]][-1]
    assert blog["train_seconds"] / ours["train_seconds"] > 5
    assert ours["window_loss"] == pytest.approx(blog["window_loss"], rel=0.05)


def test_data_bytecode_cache_cut_swifts_import_time():
    """Issue 5: on the box whose Python writes no bytecode, swift imported in 25.6 s; from our cache, in 15.4 s."""
    auto50 = [r for r in RECORDS if r["case"] == "7b-auto-50"]
    uncached = [r["timeline"]["swift imported"] for r in auto50 if not r.get("bytecode_cache")]
    cached = auto50[-1]  # the second run with the cache: the first one compiled into it
    assert cached["bytecode_cache"] and cached["timeline"]["swift imported"] < 0.7 * min(uncached)


# The time model (qwen_tune/planning/speed.py) against every single-GPU record with a token count: the host cost
# per layer and micro-step, checkpointing's and 4-bit's factors were fitted on these. A first run on a fresh
# box (cold caches) takes up to ~1.9× a warm one, and the earliest records (cuDNN attention planning every new
# shape, ten checkpoints a run) trained up to ~2.1× slower than today's plans: the bound is loose; what the planner
# needs is the ranking. ACHIEVED_FRACTION was raised to 0.3 by the 2,000-row job (41 s, 2026-11-24 later).
# Full fine-tuning is left out: its runs are bound by writing ten full checkpoints (1.5B: 9 GB each, 106 s in all).
TIMED = [
    r for r in OURS
    if r.get("train_tokens") and r.get("total_steps") and r["setup"]["n_gpus"] == 1 and r["setup"].get("tuner", "lora") == "lora"
]  # fmt: skip


@pytest.mark.parametrize("record", TIMED, ids=[f"{r['case']}-{i}" for i, r in enumerate(TIMED)])
def test_time_model_within_a_factor_of_the_bench(record):
    from qwen_tune.machine.gpus import Gpu, Inventory
    from qwen_tune.planning.models import ModelShape
    from qwen_tune.planning.speed import device_tflops, step_time

    s = record["setup"]
    micro = 1 if s.get("packing") else s["micro_batch_size"]  # packed: one pack a micro-step
    samples = record["total_steps"] * micro * record["grad_accum"]
    h100 = Inventory(gpus=(Gpu(0, "NVIDIA H100 80GB HBM3", 80 * GIB, (9, 0)),), source="record")
    step = step_time(
        ModelShape(**s["shape"]), micro_batch_size=micro, grad_accum=record["grad_accum"],
        seq_len=record["train_tokens"] / samples, gradient_checkpointing=s["gradient_checkpointing"],
        nf4=s["quantization"] == "nf4", tflops=device_tflops(h100), liger=s.get("liger", False),
        packed=bool(s.get("packing")),
    )  # fmt: skip
    assert 0.4 < step.seconds * record["total_steps"] / record["train_seconds"] < 1.5


def test_time_model_ranks_the_24gb_setups_as_measured():
    """Under a 23 GiB cap the 7B job took 296 s at 1 × 16 and 53 s at 8 × 2; with checkpointing at 1 × 16, 438 s."""
    from qwen_tune.machine.gpus import Gpu, Inventory
    from qwen_tune.planning.models import ModelShape
    from qwen_tune.planning.speed import device_tflops, step_time

    shape = ModelShape(**BY_CASE["7b-24gb"]["setup"]["shape"])
    tflops = device_tflops(Inventory(gpus=(Gpu(0, "H100", 80 * GIB, (9, 0)),), source="record"))

    def seconds(micro, checkpointing):
        return step_time(shape, micro_batch_size=micro, grad_accum=16 // micro, seq_len=52, gradient_checkpointing=checkpointing,
                         nf4=False, tflops=tflops).seconds  # fmt: skip

    assert seconds(8, False) < seconds(1, False) < seconds(1, True)
    assert seconds(1, False) / seconds(8, False) == pytest.approx(296.2 / 53.2, rel=0.35)


def _session(case: str) -> dict:
    """The case's record from the session that measured packed rows and the peer (its box's date: 2026-12-06 UTC)."""
    return next(r for r in RECORDS if r["case"] == case and r["date"] >= BAND_SINCE)


def test_data_the_real_job_trains_no_slower_than_the_fastest_peer():
    """Issue 22, one H100, one session: qwen-tune's auto plan (packed rows, no padding) against Unsloth on the same
    1,200 rows of real lengths, at least as fast, and to the same loss as the same job padded."""
    ours, peer, padded = _session("7b-real"), _session("7b-real-unsloth"), _session("7b-real-padded")
    assert ours["padding_fraction"] == 0 and ours["attention"] == "torch_varlen" and padded["padding_fraction"] > 0.5
    assert peer["train_seconds"] / ours["train_seconds"] >= 1.0
    assert ours["tail_loss"] == pytest.approx(padded["tail_loss"], rel=0.02)
    assert padded["train_seconds"] / ours["train_seconds"] > 2


def test_data_the_seed_job_is_no_slower_with_packed_rows():
    record = _session("7b-auto-50")
    assert record["train_seconds"] <= 13 and record["identity_check"] == "pass" and record["setup"]["packing"]
