"""What the swift command says about itself, read in one place (qwen_tune.swift.command)."""

from qwen_tune.swift.command import downloads_from_hf

HUB = ["swift", "sft", "--model", "Qwen/Qwen2.5-7B-Instruct"]


def test_which_hub_swift_downloads_from(tmp_path):
    assert downloads_from_hf(HUB, {}) is False  # swift's default: ModelScope
    assert downloads_from_hf(HUB, {"USE_HF": "1"}) is True
    assert downloads_from_hf([*HUB, "--use_hf", "true"], {}) is True
    assert downloads_from_hf([*HUB, "--use_hf", "false"], {"USE_HF": "1"}) is False  # the flag wins
    assert downloads_from_hf(HUB, {"HF_HUB_OFFLINE": "1"}) is None
    assert downloads_from_hf(["swift", "sft", "--model", str(tmp_path)], {}) is None  # a local directory: no download
