"""The estimator against the measured runs it is calibrated on (shared/measurements, 2026-11-22)."""

import pytest

from qwen_tune.machine.gpus import GIB
from qwen_tune.planning.memory import TrainSetup, checkpoint_bytes, estimate, host_bytes
from qwen_tune.planning.models import BUILTIN_SHAPES

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
def test_estimate_never_under_by_more_than_2_percent_nor_over_by_8(setup, reserved_gib, nvml_mib):
    """Issue 22's band: under the peak, a run runs out of memory; far over it, a plan passes over faster setups."""
    est = estimate(setup)
    assert -0.02 <= est.reserved_bytes / GIB / reserved_gib - 1 <= 0.08
    if nvml_mib:
        assert -0.02 <= est.peak_bytes / 2**20 / nvml_mib - 1 <= 0.08


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


def test_every_published_size_counts_its_parameters():
    """Totals on the model cards (Qwen2.5: 0.49/1.54/3.09/7.61/14.7/72.7B; Qwen3: 0.6/1.7/4.0/8.2/14.8/32.8B, MoE 30.5B and 235B)."""
    published = {"qwen2.5-0.5b": 0.49, "qwen2.5-1.5b": 1.54, "qwen2.5-3b": 3.09, "qwen2.5-7b": 7.61, "qwen2.5-14b": 14.7,
                 "qwen2.5-72b": 72.7, "qwen3-0.6b": 0.6, "qwen3-1.7b": 1.7, "qwen3-4b": 4.0, "qwen3-8b": 8.2,
                 "qwen3-14b": 14.8, "qwen3-32b": 32.8, "qwen3-30b-a3b": 30.5, "qwen3-235b-a22b": 235}  # fmt: skip
    for name, billions in published.items():
        assert BUILTIN_SHAPES[f"qwen/{name}"].n_params / 1e9 == pytest.approx(billions, rel=0.02), name


def test_full_fine_tuning_holds_8_bytes_a_parameter_on_one_gpu():
    """swift keeps the bf16 weights' dtype for gradients and AdamW's two moments (no fp32 master copy): 8 bytes a parameter."""
    est = dict(estimate(TrainSetup(QWEN25_7B, 8, 1, 64, True, "bf16", tuner="full")).items)
    n = QWEN25_7B.n_params
    assert est["weights (bf16)"] == 2 * n
    assert est["AdamW moments (bf16, the parameters' dtype)"] == 4 * n
    # The bf16 gradients fill in as backward frees the activations: the peak holds the larger of the two.
    activations = sum(b for label, b in est.items() if label.startswith(("activations", "logits")))
    gradients = next(b for label, b in est.items() if label.startswith("gradients"))
    assert activations + gradients == pytest.approx(max(2 * n, activations), abs=2)
    zero3 = dict(estimate(TrainSetup(QWEN25_7B, 8, 1, 64, True, "bf16", n_gpus=4, zero_stage=3, tuner="full")).items)
    assert sum(b for label, b in zero3.items() if "DeepSpeed" in label) == pytest.approx(16 * n / 4, rel=1e-6)
    offload = TrainSetup(QWEN25_7B, 8, 1, 64, True, "bf16", n_gpus=4, zero_stage=3, tuner="full", offload=True)
    assert (
        estimate(offload).reserved_bytes
        < estimate(TrainSetup(QWEN25_7B, 8, 1, 64, True, "bf16", n_gpus=4, zero_stage=3, tuner="full")).reserved_bytes
    )
    assert host_bytes(offload) == 18 * n
    assert checkpoint_bytes(QWEN25_7B, 8, tuner="full") > 6 * n


def test_moe_lora_adapts_attention_and_4_bit_leaves_the_experts_16_bit():
    moe = BUILTIN_SHAPES["qwen/qwen3-30b-a3b"]
    assert moe.is_moe and moe.active_ffn_size == 8 * 768
    assert moe.lora_params(8) == 48 * 8 * sum(i + o for i, o in moe.layer_linears()) and len(moe.layer_linears()) == 4
    nf4 = dict(estimate(TrainSetup(moe, 8, 1, 64, True, "nf4")).items)
    assert nf4["weights (attention NF4, experts 16-bit)"] > 2 * moe.expert_params


def test_hybrid_shapes_count_what_transformers_builds_and_what_swift_adapts():
    """Totals of transformers 5.19's modules (instantiated on the meta device: docs/models.md), the vision tower among
    them; LoRA on the text model's nn.Linears (attention, the Gated DeltaNet's projections, the MLP or shared expert)."""
    nine, moe, nxt = (BUILTIN_SHAPES[f"qwen/{n}"] for n in ("qwen3.5-9b", "qwen3.5-35b-a3b", "qwen3-next-80b-a3b-instruct"))
    assert (nine.n_params, nine.vision_params, nine.lora_params(8)) == (9_409_813_744, 456_010_480, 21_639_168)
    assert moe.n_params == 35_107_181_936 and moe.lora_params(8) == 11_238_720
    assert nxt.n_params == 79_674_391_296 and nxt.lora_params(8) == 9_357_696  # no shared-expert MLP: lora_target_modules
    published = {"qwen3.5-0.8b": 0.85, "qwen3.5-2b": 2.21, "qwen3.5-4b": 4.54, "qwen3.5-27b": 27.36, "qwen3.5-122b-a10b": 122.6,
                 "qwen3.5-397b-a17b": 396.8}  # fmt: skip
    for name, billions in published.items():
        assert BUILTIN_SHAPES[f"qwen/{name}"].n_params / 1e9 == pytest.approx(billions, rel=0.01), name
    # The frozen tower stays 16-bit under QLoRA and trains nothing under full fine-tuning.
    nf4 = dict(estimate(TrainSetup(nine, 8, 1, 64, True, "nf4")).items)
    assert nf4["weights (NF4 4-bit, embeddings 16-bit, vision tower 16-bit)"] > 2 * nine.vision_params
    full = dict(estimate(TrainSetup(nine, 8, 1, 64, True, "bf16", tuner="full")).items)
    assert full["AdamW moments (bf16, the parameters' dtype)"] == 4 * nine.text_params


def test_gated_deltanet_on_the_torch_path_keeps_more_than_with_fla():
    nine = BUILTIN_SHAPES["qwen/qwen3.5-9b"]
    fla, torch_path = (estimate(TrainSetup(nine, 8, 8, 512, False, "bf16", linear_attention=k)) for k in ("fla", "torch"))
    assert torch_path.reserved_bytes > fla.reserved_bytes
    dense = BUILTIN_SHAPES["qwen/qwen3-8b"]  # a model without Gated DeltaNet: the path changes nothing
    assert estimate(TrainSetup(dense, 8, 8, 512, False, "bf16", linear_attention="torch")) == estimate(
        TrainSetup(dense, 8, 8, 512, False, "bf16")
    )
