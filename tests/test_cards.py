import pytest

from qwen_tune.errors import GpuSelectionError, UsageError
from qwen_tune.machine.cards import KNOWN_CARDS, find_card, parse_gpu_spec
from qwen_tune.machine.gpus import GIB, Gpu, _visible_filter, parse_indices


@pytest.mark.parametrize(
    "spec, count, key",
    [
        ("rtx4080", 1, "rtx4080"),
        ("2xrtx3090", 2, "rtx3090"),
        ("2x RTX 3090", 2, "rtx3090"),
        ("a6000", 1, "a6000"),
        ("RTX A6000", 1, "a6000"),
        ("h100", 1, "h100"),
        ("t4", 1, "t4"),
        ("4090D", 1, "rtx4090d"),
        ("4090", 1, "rtx4090"),
        ("3090ti", 1, "rtx3090ti"),
        ("a100-80gb", 1, "a100-80gb"),
        ("2x4060ti", 2, "rtx4060ti"),
        ("RTX 4070 Ti Super", 1, "rtx4070tisuper"),
        ("4070", 1, "rtx4070"),
        ("rtx6000ada", 1, "rtx6000ada"),
        ("A10G", 1, "a10g"),
        ("l4", 1, "l4"),
        ("8xh20", 8, "h20"),
        ("a100-40gb", 1, "a100-40gb"),
        ("8xh200", 8, "h200"),
    ],
)
def test_named_cards(spec, count, key):
    inventory = parse_gpu_spec(spec)
    card = next(c for c in KNOWN_CARDS if c.key == key)
    assert len(inventory.gpus) == count
    assert inventory.gpus[0].name == card.name
    assert inventory.gpus[0].compute_capability == card.compute_capability
    assert [g.index for g in inventory.gpus] == list(range(count))


@pytest.mark.parametrize("spec", ["a100", "2xA100", "a800"])
def test_a_name_sold_in_two_sizes_asks_which(spec):
    with pytest.raises(UsageError, match="40 or 80 GB; say which"):
        parse_gpu_spec(spec)


def test_cards_people_own_are_known():
    for name in ["RTX 3060", "4060 Ti", "4070", "4070 Ti Super", "5080", "5090", "RTX A4000", "RTX A5000",
                 "RTX 6000 Ada", "L4", "A10", "A10G", "L20", "L40", "H20", "H800", "A800-80GB"]:  # fmt: skip
        assert find_card(name), name
    assert parse_gpu_spec("5090").gpus[0].compute_capability == (12, 0) and parse_gpu_spec("5090").gpus[0].bf16
    assert parse_gpu_spec("l4").gpus[0].total_bytes < parse_gpu_spec("rtx4090").gpus[0].total_bytes


def test_memory_specs_assume_ampere():
    inventory = parse_gpu_spec("2x80GiB")
    assert len(inventory.gpus) == 2
    assert inventory.gpus[0].total_bytes == 80 * GIB
    assert inventory.gpus[0].bf16
    assert parse_gpu_spec("24GB").gpus[0].total_bytes == 24 * GIB


def test_every_seed_card_is_known():
    for name in ["4090D", "4090", "3090", "3090Ti", "A6000", "A40", "4080", "4070Ti", "3080", "3080Ti",
                 "A100-40GB", "A100-80GB", "H100", "H200", "L40S", "T4", "V100"]:  # fmt: skip
        assert find_card(name), name


def test_old_cards_have_no_bf16():
    assert not parse_gpu_spec("t4").gpus[0].bf16
    assert not parse_gpu_spec("v100").gpus[0].bf16
    assert parse_gpu_spec("rtx3090").gpus[0].bf16


@pytest.mark.parametrize("spec", ["rtx9999", "0xh100", "2x", "", "5000GiB", "banana"])
def test_bad_specs_are_usage_errors(spec):
    with pytest.raises(UsageError):
        parse_gpu_spec(spec)


def test_cuda_visible_devices_filters_like_cuda():
    gpus = [Gpu(i, f"g{i}", GIB, (9, 0), uuid=f"GPU-{i}aaa") for i in range(4)]
    assert [g.index for g in _visible_filter(gpus, None)] == [0, 1, 2, 3]
    assert [g.index for g in _visible_filter(gpus, "2,0")] == [2, 0]
    assert [g.index for g in _visible_filter(gpus, "GPU-3")] == [3]
    assert [g.index for g in _visible_filter(gpus, "1,7,2")] == [1]  # CUDA stops at the first bad entry
    with pytest.raises(GpuSelectionError):
        _visible_filter(gpus, "9")
    with pytest.raises(GpuSelectionError):
        _visible_filter(gpus, "")


@pytest.mark.parametrize(
    "text, key",
    [("h100-80gb", "h100"), ("A100-80G", "a100-80gb"), ("a100 80GB", "a100-80gb"), ("rtx3090-24g", "rtx3090"),
     ("4060", "rtx4060"), ("2080ti", "rtx2080ti"), ("H20-96GB", "h20"), ("h100-80GiB", "h100"), ("ｈ１００", "h100")],
)  # fmt: skip
def test_cards_as_people_write_them(text, key):
    assert find_card(text).key == key


def test_a_size_besides_the_tables_is_that_card_with_that_memory():
    """rtx4060ti-8g, rtx3080-12g: sold with other memory than the table's; the user knows their card."""
    card = find_card("rtx4060ti-8g")
    assert card.memory_mib == 8 * 1024 and card.compute_capability == (8, 9) and card.name.endswith("(8 GB)")
    assert find_card("a100-80").key == "a100-80gb" and find_card("a100-48gb") is None  # not the A10 with 048 GB


def test_two_kinds_of_card_in_one_gpus_is_one_line():
    with pytest.raises(UsageError, match="one kind of card"):
        parse_indices("rtx4090,rtx3090")
