import pytest

from qwen_tune.errors import ConfigError
from qwen_tune.planning.config import shipped_names
from qwen_tune.planning.profiles import load_profile, shipped_profiles
from qwen_tune.planning.recipes import load_recipe

GOOD = """\
name: mine
description: my job
model: Qwen/Qwen2.5-7B-Instruct
dataset: data.jsonl
system: You are a helpful assistant.
identity:
  name: Alice
  author: {zh: 某团队, en: Some Team}
training: {epochs: 3, learning_rate: 2.0e-4, effective_batch_size: 8, max_length: 1024, warmup_ratio: 0.1}
lora: {rank: 16, alpha: 32, dropout: 0.0, target_modules: all-linear}
"""


def test_shipped_recipes_load():
    names = shipped_names("recipes")
    assert {"self-cognition-qwen2.5-7b", "self-cognition-qwen3-14b", "demo-tiny-cpu"} <= set(names)
    reference = load_recipe("self-cognition-qwen2.5-7b")
    assert (reference.epochs, reference.learning_rate, reference.lora_rank, reference.lora_alpha) == (10, 1e-4, 8, 32)
    assert (reference.effective_batch_size, reference.max_length, reference.warmup_ratio) == (16, 2048, 0.05)
    assert reference.target_modules == "all-linear"
    assert reference.system == "You are a helpful assistant."


def test_shipped_profiles_load_in_preference_order():
    names = [p.name for p in shipped_profiles()]
    assert set(names) == {"large", "24gb", "16gb", "multi-gpu", "qlora", "cpu"}
    assert names.index("24gb") < names.index("16gb") < names.index("qlora")
    p16 = load_profile("16gb")
    assert p16.gradient_checkpointing == "auto" and p16.micro_batch_size == "max" and p16.attention == "sdpa"


def test_user_recipe_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(GOOD)
    recipe = load_recipe(str(path))
    assert recipe.identity_name.zh == recipe.identity_name.en == "Alice"
    assert recipe.identity_author.zh == "某团队"
    assert recipe.dataset == str(tmp_path / "data.jsonl")  # relative to the recipe file


@pytest.mark.parametrize(
    "change, message",
    [
        (("epochs: 3, ", ""), "training.epochs is missing"),
        (("epochs: 3", "epochs: -1"), "training.epochs must be a number"),
        (("rank: 16", "rank: 1.5"), "lora.rank must be an integer"),
        (("model: Qwen/Qwen2.5-7B-Instruct\n", ""), "model is missing"),
        (("system:", "sytem:"), "system is missing"),
        (("lora: {", "extra: 1\nlora: {"), "extra is not a known field"),
        (("name: Alice", "name: {zh: 甲}"), "identity.name.en is missing"),
        (("learning_rate: 2.0e-4", "learning_rate: fast"), "training.learning_rate must be a number"),
    ],
)
def test_bad_recipe_fields_name_the_field(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_recipe(str(path))


def test_unknown_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(str(broken))
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(str(tmp_path / "missing.yaml"))


def test_bad_profile_field(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: x\nsummary: s\npreference: 1\ndevices: single\nmin_memory_gib: 0\nmicro_batch_size: 1\n"
        "gradient_checkpointing: maybe\nattention: sdpa\nquantization: none\ndeepspeed: none\n"
    )
    with pytest.raises(ConfigError, match="gradient_checkpointing must be one of"):
        load_profile(str(path))
