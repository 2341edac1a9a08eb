"""Packed rows without padding: the attention that keeps rows apart (swift/plugins/varlen_attention.py), the plan that
sizes micro-batches by tokens, and a real `swift sft --packing` on the CPU."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FIXED_NOW, PLAIN_MACHINE

from qwen_tune.planning.jobs import JobOptions, prepare
from qwen_tune.planning.plan import expected_padding
from qwen_tune.report import plan_text
from qwen_tune.swift.command import VARLEN_PLUGIN, sft_argv, with_train_probe

REPO = Path(__file__).resolve().parents[1]


def tiny_qwen2():
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import qwen_tune.swift.plugins.varlen_attention  # noqa: F401  registers torch_varlen

    config = Qwen2Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).eval()


def test_packed_rows_attend_only_within_themselves():
    """Three rows packed into one with restarting position_ids give each row's logits as if it ran alone (sdpa)."""
    import torch

    model = tiny_qwen2()
    rows = [torch.randint(0, 97, (n,)) for n in (7, 12, 4)]
    with torch.no_grad():
        alone = [model(input_ids=r[None]).logits[0] for r in rows]
        model.set_attn_implementation("torch_varlen")
        positions = torch.cat([torch.arange(len(r)) for r in rows])[None]
        packed = model(input_ids=torch.cat(rows)[None], position_ids=positions).logits[0]
    for expected, got in zip(alone, packed.split([len(r) for r in rows]), strict=True):
        assert torch.allclose(expected, got, atol=1e-5)


def test_padded_rows_get_their_mask_and_generation_works():
    """A padded batch (generation's prefill, evaluation) keeps its padding mask under torch_varlen, and decoding
    with a KV cache gives what sdpa gives."""
    import torch

    model = tiny_qwen2()
    ids = torch.randint(1, 97, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
        greedy = model.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=5, do_sample=False)
        model.set_attn_implementation("torch_varlen")
        got = model(input_ids=ids, attention_mask=mask).logits
        generated = model.generate(input_ids=ids[:1], attention_mask=mask[:1], max_new_tokens=5, do_sample=False)
    assert torch.allclose(reference[0], got[0], atol=1e-5) and torch.allclose(reference[1, :6], got[1, :6], atol=1e-5)
    assert torch.equal(greedy, generated)


@pytest.mark.requires_swift
def test_swift_accepts_packing_with_the_plugin_and_only_for_its_attention():
    from swift.arguments import SftArguments

    import qwen_tune.swift.plugins.varlen_attention  # noqa: F401

    ours = SimpleNamespace(padding_free=False, packing=True, attn_impl="torch_varlen")
    SftArguments._check_padding_free(ours)
    assert ours.padding_free  # packing implies padding-free batches, as swift's own check sets
    with pytest.raises(ValueError, match="flash attention"):
        SftArguments._check_padding_free(SimpleNamespace(padding_free=True, packing=False, attn_impl="sdpa"))


def plan(**flags):
    flags.setdefault("output_dir", "runs")
    return prepare(JobOptions(**flags), PLAIN_MACHINE, for_run=False, now=FIXED_NOW).plan


def test_an_optimizer_step_keeps_the_recipes_rows_in_tokens():
    """Packed, a step holds the effective batch's tokens at the data's mean row: the same number of optimizer steps
    as padded rows, with none of the padding; the plan says so and renders swift's packing flags."""
    packed, padded = plan(gpus="h100"), plan(gpus="h100", packing=False)
    tokens = packed.setup.packing.tokens * packed.grad_accum
    assert tokens >= 16 * packed.data.mean_tokens and packed.steps_per_epoch == padded.steps_per_epoch
    argv = sft_argv(packed)
    assert argv[argv.index("--packing_length") + 1] == str(packed.setup.packing.tokens)
    assert argv[argv.index("--external_plugins") + 1] == str(VARLEN_PLUGIN) and "--attn_impl torch_varlen" in " ".join(argv)
    assert "no padding: rows packed" in plan_text(packed) and "packs of ≤" in plan_text(packed)
    assert packed.speed_basis(989.0).padding_fraction == 0 and padded.speed_basis(989.0).padding_fraction > 0


def test_the_identity_probe_joins_the_varlen_plugin_in_one_flag(tmp_path):
    argv, _ = with_train_probe(sft_argv(plan(gpus="h100")), {}, tmp_path / "request.json")
    assert argv.count("--external_plugins") == 1
    at = argv.index("--external_plugins")
    assert argv[at + 1 : at + 3] == [str(VARLEN_PLUGIN), str(VARLEN_PLUGIN.parent.parent / "train_probe.py")]


def test_where_packing_cannot_run_rows_are_padded_and_the_plan_says_why():
    assert plan(gpus="t4").setup.packing is None  # no bfloat16: FlashAttention's kernel needs sm80+
    assert "--no-packing" in plan_text(plan(gpus="h100", packing=False))
    assert plan(gpus="cpu", recipe="demo-tiny-cpu", model=str(REPO / "tests" / "data" / "tiny-config")).setup.packing is None


def test_expected_padding_of_random_batches():
    assert expected_padding((10,) * 50, 16) == 0  # rows of one length: no padding
    assert 0.4 < expected_padding(tuple([10] * 45 + [100] * 5), 8) < 0.8  # a long tail pads the batches it lands in
    assert expected_padding((5, 9), 1) == 0


@pytest.mark.e2e
@pytest.mark.requires_swift
def test_a_packed_run_trains_on_the_cpu(tmp_path):
    """`--packing` on the CPU (one attention call a row there): swift packs the rows, trains through qwen-tune's
    plugin, and the run reports no padding, its tokens/s and the attention that ran."""
    model = tmp_path / "tiny"
    subprocess.run([sys.executable, str(REPO / "tools" / "make_model.py"), "tiny", str(model)], check=True, capture_output=True)
    rows = (REPO / "qwen_tune" / "data" / "self_cognition.jsonl").read_text(encoding="utf-8").splitlines()
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(rows[:12] + rows[50:62]) + "\n", encoding="utf-8")
    runs = tmp_path / "runs"
    done = subprocess.run(
        [sys.executable, "-m", "qwen_tune", "run", "--recipe", "demo-tiny-cpu", "--model", str(model), "--gpus", "cpu",
         "--dataset", str(data), "--packing", "--no-verify", "--output-dir", str(runs)],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (run_dir,) = runs.iterdir()
    argv = json.loads((run_dir / "command.json").read_text())["argv"]
    assert "--packing" in argv and argv[argv.index("--attn_impl") + 1] == "torch_varlen"
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "done" and result["padding_fraction"] == 0 and result["attention"] == "torch_varlen"
    assert result["tokens_per_second"] > 0 and result["mfu"] is None  # no peak to count MFU against on the CPU
    plan_json = json.loads((run_dir / "plan.json").read_text())
    assert result["steps"] == plan_json["total_steps"]  # swift made as many packs as the plan said
    assert "Packing" in (run_dir / "swift.log").read_text(errors="replace")
    assert "tokens/s" in done.stdout
    # After training nothing runs packed: export loads the adapter with sdpa, not the plugin's name from args.json, and
    # the merged model answers the probes (24 rows need not teach a tiny model its name: PASS, or FAIL's exit 4).
    merged = subprocess.run([sys.executable, "-m", "qwen_tune", "export", str(run_dir)], capture_output=True, text=True,
                            timeout=900, cwd=REPO)  # fmt: skip
    assert merged.returncode in (0, 4), merged.stderr[-3000:]
    assert (run_dir / "merged" / "config.json").is_file() and (run_dir / "merged-check" / "merged_check.json").is_file()


def test_pack_count_is_swifts_own_packing():
    """binpacking's worst-fit decreasing in windows of 1,000 rows, the last pack carried over, as swift 4.6 packs."""
    import math
    import random

    import binpacking

    from qwen_tune.swift.packing import pack_count

    rng = random.Random(1)
    for n, capacity in ((24, 400), (300, 831), (2500, 2000), (2100, 6000)):
        lengths = [min(capacity, max(3, round(math.exp(rng.gauss(math.log(120), 1.0))))) for _ in range(n)]
        data, carried, count = list(enumerate(lengths)), [], 0
        for start in range(0, n, 1000):  # swift/dataset/packing.py PackingDataset.create_packed_idx
            packs = binpacking.to_constant_volume(carried + data[start : start + 1000], capacity, weight_pos=1)
            packs, carried = (packs[:-1], packs[-1]) if start + 1000 < n else (packs, [])
            count += len(packs)
        assert pack_count(lengths, capacity) == count


@pytest.mark.requires_swift
def test_swift_packs_in_this_process_not_in_a_new_swift():
    """swift would spawn a process that imports swift again (7 s on the H100) where CUDA is up: a thread does it."""
    import multiprocessing

    from datasets import Dataset
    from swift.dataset import packing

    import qwen_tune.swift.plugins.varlen_attention  # noqa: F401
    from qwen_tune.swift.packing import pack_count

    template = SimpleNamespace(max_length=100, packing=False, padding_free=False)
    lengths = [30, 50, 20, 70, 10, 90, 45]
    packed = packing.PackingDataset(template, Dataset.from_dict({"lengths": lengths}), packing_length=100)
    assert multiprocessing.active_children() == [] and len(packed) == pack_count(lengths, 100)
    assert sorted(i for pack in packed.packed_idx for i in pack) == list(range(len(lengths)))
