import re

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
        (("system:", "sytem:"), "sytem is not a known field (did you mean system?)"),
        (("system: You are a helpful assistant.\n", ""), "system is missing"),
        (("epochs: 3", "epochs: true"), "training.epochs must be a number from 0.01 to 1000 (got True)"),
        (("name: mine", "name: ../../escaped"), "name must be at most 64 letters"),
        (("lora: {rank: 16, alpha: 32, dropout: 0.0, target_modules: all-linear}\n", ""), "lora is missing"),
        (("lora: {", "extra: 1\nlora: {"), "extra is not a known field"),
        (("name: Alice", "name: {zh: 甲}"), "identity.name.en is missing"),
        (("learning_rate: 2.0e-4", "learning_rate: fast"), "training.learning_rate must be a number"),
    ],
)
def test_bad_recipe_fields_name_the_field(tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(ConfigError, match=re.escape(message)):
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


def test_every_recipe_problem_at_once_in_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("epochs: 3", "epoch: 3").replace("2.0e-4", "3").replace("rank: 16", "rank: 0"))
    with pytest.raises(ConfigError) as caught:
        load_recipe(str(path))
    assert str(caught.value) == (
        f"{path}: training.epoch is not a known field (did you mean epochs?); "
        "training.learning_rate must be a number from 1e-08 to 1 (got 3); lora.rank must be an integer from 1 to 1024 (got 0)"
    )


def test_numbers_as_people_write_them(tmp_path):
    """YAML 1.1 reads 1e-4 and 1_000 as text, and 16.0 is a whole number: all count."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        GOOD.replace("2.0e-4", "1e-4")
        .replace("rank: 16", "rank: 16.0")
        .replace("effective_batch_size: 8", "effective_batch_size: 1_024")
    )
    recipe = load_recipe(str(path))
    assert (recipe.learning_rate, recipe.lora_rank, recipe.effective_batch_size) == (1e-4, 16, 1024)
    assert isinstance(recipe.lora_rank, int)


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(GOOD.replace("training: {epochs: 3,", "training: {epochs: 3, epochs: 400,"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: line 9: epochs is given twice (first at line 9); keep one")):
        load_recipe(str(path))
    path.write_text(GOOD + "name: other\n")
    with pytest.raises(ConfigError, match="line 11: name is given twice .first at line 1."):
        load_recipe(str(path))


def test_yaml_merge_keys_still_override(tmp_path):
    """A merge (<<: *base) followed by the key itself is YAML's way to override, not a duplicate."""
    path = tmp_path / "merge.yaml"
    path.write_text(
        GOOD.replace("training: {epochs: 3,", "base: &base {epochs: 3}\ntraining: {<<: *base, epochs: 5,").replace(
            "epochs: 5, 3,", "epochs: 5,"
        )
    )
    text = path.read_text()
    assert "<<" in text
    with pytest.raises(ConfigError, match="base is not a known field"):  # the anchor's own key is still unknown
        load_recipe(str(path))


ANCHOR_BOMB = "\n".join(
    [f"l0: &l0 [{', '.join(['lol'] * 9)}]"] + [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 9)}]" for n in range(1, 9)]
)


@pytest.mark.parametrize("field", ["name", "description", "system"])
def test_an_anchor_bomb_is_refused_before_it_expands(tmp_path, field):
    path = tmp_path / "bomb.yaml"
    path.write_text(ANCHOR_BOMB + "\n" + GOOD.replace(f"{field}:", f"{field}: *l8\nunused_{field}:", 1))
    with pytest.raises(ConfigError) as caught:
        load_recipe(str(path))
    message = str(caught.value)
    assert "aliases (*name) expand to more than 10,000 values" in message and len(message) < 300


def test_small_aliases_are_fine_and_a_bad_value_is_shown_short(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("x: &x [" + ", ".join(["word"] * 50) + "]\n" + GOOD.replace("description: my job", "description: *x"))
    with pytest.raises(ConfigError) as caught:
        load_recipe(str(path))
    assert "description must be non-empty text (got ['word', 'word', 'word', 'word', ...])" in str(caught.value)


def test_deep_nesting_and_huge_files_are_one_line(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="nests deeper than 32 levels"):
        load_recipe(str(deep))
    huge = tmp_path / "huge.yaml"
    huge.write_text(GOOD + "# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="a config file is a few hundred bytes"):
        load_recipe(str(huge))


def test_profile_problems_all_at_once(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: x\nsummary: s\npreference: 1\ndevice: single\nmin_memory_gib: 0\nmicro_batch_size: many\n"
        "gradient_checkpointing: auto\nattention: sdpa\nquantization: none\ndeepspeed: none\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_profile(str(path))
    assert str(caught.value) == (
        f"{path}: device is not a known field (did you mean devices?); "
        "micro_batch_size must be an integer from 1 to 4096, or one of max (got 'many')"
    )


def test_readme_recipe_template_is_current_and_loads(tmp_path):
    from conftest import load_script

    template = load_script("recipe_template")
    readme = load_script("readme_section").README.read_text(encoding="utf-8")
    assert template.SECTION.read(readme) == template.render(), "README.md is stale: run python tools/recipe_template.py --write"
    path = tmp_path / "my-recipe.yaml"
    path.write_text(template.template_yaml(template.render()), encoding="utf-8")
    recipe = load_recipe(str(path))
    assert (recipe.name, recipe.identity_name.zh, recipe.lora_rank, recipe.dataset) == (
        "my-identity",
        "星火",
        8,
        str(tmp_path / "my_identity.jsonl"),
    )


def test_the_template_names_every_field():
    from conftest import load_script

    from qwen_tune.planning.config import documented_fields
    from qwen_tune.planning.recipes import RecipeFile

    rendered = load_script("recipe_template").render()
    for path, info, _ in documented_fields(RecipeFile):
        assert info.description, f"{path} needs a description"
        if not path.startswith("identity.name.") and not path.startswith("identity.author."):
            assert f"{path.rsplit('.', 1)[-1]}:" in rendered


@pytest.mark.parametrize(
    "text, message",
    [
        ("x: &x [*x]\n", "line 1: an alias (*name) inside the value it names would repeat it forever"),
        ("identity: &i {name: *i, author: Bob}\n", "line 1: an alias (*name) inside the value it names"),
        ("\n".join(["l0: &l0 [x]"] + [f"l{n}: &l{n} [*l{n - 1}]" for n in range(1, 200)]), "aliases (*name) nest deeper than 32"),
    ],
)
def test_aliases_that_recurse_or_nest_deep_are_one_line(tmp_path, text, message):
    """A value that contains itself, or a chain of aliases each one level deeper, would recurse without end."""
    path = tmp_path / "alias.yaml"
    path.write_text(text + "\n" + GOOD.replace("identity:", "unused:", 1) if "identity" in text else text + "\n" + GOOD)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe(str(path))
