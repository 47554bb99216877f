from pathlib import Path

import pytest
import yaml

from lite_cpt.errors import UserError
from lite_cpt.arms import arm_names
from lite_cpt.recipe import load_recipe, recipe_from_dict

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "recipes").rglob("*.yaml"))


def minimal(**extra) -> dict:
    raw = {"name": "t", "tasks": [{"name": "a", "type": "mini_clevr"}], "arms": [{"name": "sft"}]}
    raw.update(extra)
    return raw


def write(tmp_path, raw) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_recipe_validates(path):
    # Real datasets are not on CI machines: check schema and references, not data presence.
    recipe = load_recipe(path, check_data=False)
    assert recipe.tasks and recipe.arms
    assert path.read_text().startswith("# lite-cpt run"), "recipes start with their launch command"


def test_shipped_recipes_exist():
    names = {p.name for p in SHIPPED}
    assert {"tiny.yaml", "seven_tasks.yaml"} <= names


def test_defaults_and_method_from_name():
    recipe = recipe_from_dict(minimal())
    assert recipe.arms[0].method == "sft"
    assert recipe.model.name == "tiny"
    assert recipe.tasks[0].train_size == 256


def test_unknown_key_names_path_and_allowed_keys():
    raw = minimal(model={"lora": {"rank": 8}})
    with pytest.raises(UserError) as info:
        recipe_from_dict(raw, "r.yaml")
    message = str(info.value)
    assert "model.lora.rank: unknown key" in message
    assert "allowed keys: r, alpha, dropout, target_modules" in message


def test_wrong_literal_lists_allowed_values():
    with pytest.raises(UserError) as info:
        recipe_from_dict(minimal(model={"quantization": "nf5"}))
    assert "model.quantization" in str(info.value)
    assert "'nf4'" in str(info.value)


def test_wrong_type_names_key():
    raw = minimal()
    raw["tasks"][0]["train_size"] = "many"
    with pytest.raises(UserError, match=r"tasks\.0\.train_size"):
        recipe_from_dict(raw)


def test_arm_without_method_lists_methods():
    raw = minimal(arms=[{"name": "mine"}])
    with pytest.raises(UserError) as info:
        recipe_from_dict(raw)
    assert all(m in str(info.value) for m in arm_names())


def test_unknown_method_names_the_key_and_lists_the_registered_methods():
    raw = minimal(arms=[{"name": "mine", "method": "dpo"}])
    with pytest.raises(UserError) as info:
        recipe_from_dict(raw)
    message = str(info.value)
    assert "arms.0.method: unknown arm method 'dpo'; allowed values: " + ", ".join(arm_names()) in message


def test_unknown_task_type(tmp_path):
    raw = minimal(tasks=[{"name": "a", "type": "nope"}])
    with pytest.raises(UserError, match="unknown task type 'nope'; allowed values: .*mini_clevr"):
        load_recipe(write(tmp_path, raw))


def test_duplicate_names_and_rif_band():
    with pytest.raises(UserError, match="appears twice"):
        recipe_from_dict(minimal(arms=[{"name": "sft"}, {"name": "sft"}]))
    with pytest.raises(UserError, match="must be below"):
        recipe_from_dict(minimal(arms=[{"name": "rif_rft", "rif": {"low": 0.8, "high": 0.2}}]))


def test_overrides_by_index_name_and_new_key(tmp_path):
    raw = minimal(arms=[{"name": "sft"}, {"name": "rft"}])
    path = write(tmp_path, raw)
    recipe = load_recipe(path, ["seed=3", "arms.rft.rft.group_size=4", "tasks.0.train_size=7", "model.lora.r=2"])
    assert recipe.seed == 3
    assert recipe.arms[1].rft.group_size == 4
    assert recipe.tasks[0].train_size == 7
    assert recipe.model.lora.r == 2
    with pytest.raises(UserError, match="no item named 'x'"):
        load_recipe(path, ["arms.x.lr=1"])
    with pytest.raises(UserError, match="model.bogus: unknown key"):
        load_recipe(path, ["model.bogus=1"])
    with pytest.raises(UserError, match="not of the form"):
        load_recipe(path, ["seed"])


def test_missing_recipe_file_names_path(tmp_path):
    with pytest.raises(UserError, match="recipe file not found: .*nothere.yaml"):
        load_recipe(tmp_path / "nothere.yaml")


def test_missing_data_path_is_reported(tmp_path):
    raw = minimal(tasks=[{"name": "sq", "type": "scienceqa", "source": {"path": "nowhere/sq"}}])
    raw["data"] = {"root": str(tmp_path)}
    with pytest.raises(UserError) as info:
        load_recipe(write(tmp_path, raw))
    assert "tasks.0.source.path" in str(info.value)
    assert str(tmp_path / "nowhere" / "sq") in str(info.value)


def test_kl_reference_recipes():
    def rft_arms(name):
        return [a for a in load_recipe(ROOT / "recipes" / name, check_data=False).arms if "rft" in a.method]

    assert {a.rft.kl_reference for a in rft_arms("tiny.yaml")} == {"previous_task"}
    assert {a.rft.kl_reference for a in rft_arms("seven_tasks.yaml")} == {"previous_task"}
    (to_base,) = rft_arms("ablations/kl_to_base.yaml")
    assert to_base.rft.kl and to_base.rft.kl_reference == "base"
    (no_kl,) = rft_arms("ablations/no_kl.yaml")
    assert not no_kl.rft.kl


def test_rl_defaults_follow_easyr1():
    rft = recipe_from_dict(minimal(arms=[{"name": "rft"}])).arms[0].rft
    assert (rft.eps_low, rft.eps_high, rft.dual_clip) == (0.2, 0.3, 3.0)  # clip_ratio_low/high/dual
    assert (rft.top_k, rft.repetition_penalty, rft.mini_batches_per_rollout) == (0, 1.0, 1)
    with pytest.raises(UserError, match="mini_batches_per_rollout"):
        recipe_from_dict(minimal(arms=[{"name": "rft", "rft": {"prompts_per_step": 6, "mini_batches_per_rollout": 4}}]))


def test_every_kind_of_recipe_error_reads_whole(tmp_path):
    """Each message as a user sees it: where, what, what was given or allowed."""
    def error(raw=None, overrides=(), path=None) -> str:
        with pytest.raises(UserError) as info:
            load_recipe(path or write(tmp_path, raw or minimal()), list(overrides), check_data=False)
        return str(info.value)

    path = write(tmp_path, minimal(arms=[{"name": "sft"}, {"name": "rft"}]))
    assert error(path=path, overrides=["arms.ewc.lr=1"]) == "override 'arms.ewc': no item named 'ewc' (have: sft, rft)"
    assert error(path=path, overrides=["tasks.3.epochs=2"]) == "override 'tasks.3': index out of range (list has 1 items)"
    assert error(path=path, overrides=["name.x=1"]) == "override 'name.x': 'name' is not a section"
    assert error(path=path, overrides=["=3"]) == "override '=3' has an empty key"
    # A value may hold '=': only the first one splits key from value.
    assert load_recipe(path, ["name=a=b"], check_data=False).name == "a=b"
    missing = minimal()
    del missing["tasks"][0]["type"]
    assert error(missing) == f"invalid recipe {tmp_path / 'r.yaml'}:\n  tasks.0.type: required key is missing"
    wrong = minimal()
    wrong["tasks"][0]["epochs"] = "many"
    assert error(wrong).splitlines()[1].startswith("  tasks.0.epochs: ") and error(wrong).endswith("(got 'many')")
    assert error(minimal(model={"quantization": "nf5"})).splitlines()[1] == (
        "  model.quantization: got 'nf5'; allowed values: 'auto', 'none', 'nf4' or 'int8'")
    assert error(minimal(tiny=1)).splitlines()[1].startswith("  tiny: unknown key; allowed keys: name, seed, ")
    assert error(minimal(arm_defaults=[1])) == "arm_defaults must be a mapping of arm settings"


def test_arm_defaults_fill_every_arm_and_extends_chains_refuse_cycles(tmp_path):
    path = write(tmp_path, minimal(arms=[{"name": "sft"}, {"name": "rft", "lr": 0.5}], arm_defaults={"lr": 0.1}))
    assert [a.lr for a in load_recipe(path, check_data=False).arms] == [0.1, 0.5]
    # Two levels of extends: the grandparent's keys arrive through the parent.
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(minimal(seed=5)))
    (tmp_path / "mid.yaml").write_text("extends: base.yaml\nname: mid\n")
    (tmp_path / "leaf.yaml").write_text("extends: mid.yaml\nname: leaf\n")
    leaf = load_recipe(tmp_path / "leaf.yaml", check_data=False)
    assert (leaf.name, leaf.seed) == ("leaf", 5)
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(UserError, match=r"^recipe .*/a\.yaml: `extends` forms a cycle through .*/b\.yaml$"):
        load_recipe(tmp_path / "a.yaml", check_data=False)


def test_a_recipe_under_recipes_is_found_in_the_package_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_recipe("recipes/tiny.yaml", check_data=False).name == "tiny"


def test_a_source_given_a_path_or_hub_id_takes_no_location_from_its_type():
    from lite_cpt.recipe_tasks import DataSourceConfig, fill_source

    typed = fill_source(DataSourceConfig(), "clevr", benchmark=False)
    assert typed.hf_id  # the type's published dataset
    by_path = fill_source(DataSourceConfig(path="/data/clevr"), "clevr", benchmark=False)
    assert by_path.path == "/data/clevr" and by_path.hf_id is None and by_path.hf_config is None
    by_id = fill_source(DataSourceConfig(hf_id="me/clevr"), "clevr", benchmark=False)
    assert by_id.hf_id == "me/clevr" and by_id.path is None


def test_config_hash_ignores_key_order():
    from lite_cpt.recipe import config_hash

    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_an_arm_that_is_not_a_mapping_is_named_even_with_arm_defaults(tmp_path):
    path = write(tmp_path, minimal(arms=["sft"], arm_defaults={"lr": 0.1}))
    with pytest.raises(UserError, match=r"arms\.0: Input should be a valid dictionary or instance of ArmConfig"):
        load_recipe(path, check_data=False)
