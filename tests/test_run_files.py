"""What a resumed run trusts on disk, checked on hand-made run directories (no model): rows rebuilt
from the log when matrix.json or general.json is damaged, the fall-back past a damaged adapter,
the log cut back before work is redone, and the saved recipe a re-run is compared with."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lite_cpt.errors import UserError
from lite_cpt.run import continual
from lite_cpt.run import rows as rows_module
from lite_cpt.run.integrity import write_manifest
from lite_cpt.io import append_jsonl, atomic_write_json, read_jsonl
from lite_cpt.recipe import recipe_from_dict
from tests.helpers import tiny_recipe

R0, G0 = [0.1, 0.2], [0.5]
ROWS = [[0.9, 0.2], [0.4, 0.8], [0.5, 0.7]]
GENERAL = [[0.6], [0.55], [0.5]]


def arm_with_tasks(tmp_path: Path, finished: int = 3) -> tuple[SimpleNamespace, Path]:
    """A seed directory with row 0 saved and an arm that finished `finished` tasks: sealed
    adapters, task_end records carrying their rows, matrix.json and general.json."""
    seed_dir = tmp_path / "seed_0"
    arm_dir = seed_dir / "sft"
    arm_dir.mkdir(parents=True)
    atomic_write_json(seed_dir / continual.BASE_SCORES, {"R0": R0, "G0": G0})
    for t in range(1, finished + 1):
        task_dir = arm_dir / f"task_{t}"
        task_dir.mkdir()
        (task_dir / "adapter_model.safetensors").write_bytes(bytes([t]) * 64)
        write_manifest(task_dir)
        append_jsonl(arm_dir / "metrics.jsonl", {"event": "step", "task_index": t, "loss": 1.0 / t})
        append_jsonl(arm_dir / "metrics.jsonl", {"event": "task_end", "task_index": t, "scores": ROWS[t - 1],
                                                 "general": GENERAL[t - 1]})
    atomic_write_json(arm_dir / "general.json", {"benchmarks": ["pope"], "G": [G0, *GENERAL[:finished]]})
    atomic_write_json(arm_dir / "matrix.json", {"tasks": ["a", "b"], "R": [R0, *ROWS[:finished]]})
    return SimpleNamespace(run_dir=seed_dir), arm_dir


def test_intact_files_are_the_rows_a_resume_trusts(tmp_path):
    ws, arm_dir = arm_with_tasks(tmp_path, finished=2)
    assert rows_module.resume_rows(ws, arm_dir) == ([R0, *ROWS[:2]], [G0, *GENERAL[:2]])


def test_a_damaged_matrix_is_rebuilt_from_the_rows_the_log_carries(tmp_path, caplog):
    ws, arm_dir = arm_with_tasks(tmp_path)
    (arm_dir / "matrix.json").write_text('{"tasks": ["a", "b"], "R": [[0.1')
    # a record of a task out of order (a log written twice) is not a row
    append_jsonl(arm_dir / "metrics.jsonl", {"event": "task_end", "task_index": 2, "scores": [9, 9], "general": [9]})
    with caplog.at_level(logging.WARNING):
        rows, general = rows_module.resume_rows(ws, arm_dir)
    assert rows == [R0, *ROWS] and general == [G0, *GENERAL]
    said = [record.getMessage() for record in caplog.records]
    assert f"{arm_dir / 'matrix.json'} is damaged; what it held is computed again" in said
    assert f"{arm_dir / 'matrix.json'} is damaged; its rows are rebuilt from {arm_dir / 'metrics.jsonl'}" in said


def test_a_damaged_general_json_is_rebuilt_and_a_row_the_marker_lacks_is_not_trusted(tmp_path, caplog):
    ws, arm_dir = arm_with_tasks(tmp_path)
    (arm_dir / "general.json").write_bytes(b"\x00\x00")
    with caplog.at_level(logging.WARNING):
        assert rows_module.resume_rows(ws, arm_dir) == ([R0, *ROWS], [G0, *GENERAL])
    assert "general.json is damaged" in caplog.text
    # killed between the two writes of row 3: general.json has it, the marker (matrix.json) not
    ws, arm_dir = arm_with_tasks(tmp_path / "between")
    atomic_write_json(arm_dir / "matrix.json", {"tasks": ["a", "b"], "R": [R0, *ROWS[:2]]})
    assert rows_module.resume_rows(ws, arm_dir) == ([R0, *ROWS[:2]], [G0, *GENERAL[:2]])


def test_a_damaged_adapter_drops_its_row_and_everything_trained_after_it(tmp_path, caplog):
    ws, arm_dir = arm_with_tasks(tmp_path)
    for t in (2, 3):  # each checked from the last one back: both damaged, task 1 is the last intact
        (arm_dir / f"task_{t}" / "adapter_model.safetensors").write_bytes(b"\x07" * 64)  # same size, other bytes
    checkpoints = arm_dir / "checkpoints"
    for name in ("phase_2_update_4", "phase_3_update_2", "phase_3_update_4"):
        (checkpoints / name).mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        rows, general = rows_module.resume_rows(ws, arm_dir)
    assert rows == [R0, ROWS[0]] and general == [G0, GENERAL[0]]
    assert f"task adapter {arm_dir / 'task_3'} is damaged" in caplog.text
    assert f"task adapter {arm_dir / 'task_2'} is damaged" in caplog.text
    assert sorted(p.name for p in arm_dir.glob("task_*")) == ["task_1"]
    # task 2 is trained again from task 1: its own checkpoints descend from task 1 and stay
    assert sorted(p.name for p in checkpoints.iterdir()) == ["phase_2_update_4"]


def test_an_adapter_saved_without_a_manifest_is_trusted_one_without_weights_is_not(tmp_path):
    ws, arm_dir = arm_with_tasks(tmp_path)
    (arm_dir / "task_3" / "manifest.json").unlink()  # saved by an earlier version
    assert continual.last_intact_task(arm_dir, 3) == 3
    (arm_dir / "task_3" / "adapter_model.safetensors").unlink()
    assert continual.last_intact_task(arm_dir, 3) == 2
    assert continual.last_intact_task(arm_dir, 0) == 0


def test_the_log_is_cut_at_the_first_record_of_work_about_to_be_redone(tmp_path):
    _, arm_dir = arm_with_tasks(tmp_path)
    log_path = arm_dir / "metrics.jsonl"
    continual.cut_log(log_path, lambda r: r.get("task_index", 0) < 2)
    assert [(r["event"], r["task_index"]) for r in read_jsonl(log_path)] == [("step", 1), ("task_end", 1)]
    continual.cut_log(log_path, lambda r: True)
    assert len(read_jsonl(log_path)) == 2


def test_a_rerun_may_change_where_it_logs_and_checkpoints_and_a_damaged_saved_recipe_is_rewritten(tmp_path, caplog):
    recipe = recipe_from_dict(tiny_recipe(tmp_path))
    run_dir = continual.prepare_run_dir(recipe)
    changed = recipe.model_copy(update={"logging": recipe.logging.model_copy(update={"tensorboard": True}),
                                        "checkpoint": recipe.checkpoint.model_copy(update={"every_updates": 7})})
    assert continual.prepare_run_dir(changed) == run_dir
    for damage in (b":\n  - [unclosed", b"\xff\xfe\x00[garbage"):  # unparsable; not even UTF-8
        (run_dir / "recipe.yaml").write_bytes(damage)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            continual.prepare_run_dir(recipe)
        assert f"{run_dir / 'recipe.yaml'} is damaged; it is written again from this recipe" in caplog.text
        assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["name"] == recipe.name


def _sealed_adapters(arm_dir: Path, count: int) -> None:
    for t in range(1, count + 1):
        (arm_dir / f"task_{t}").mkdir(parents=True)
        (arm_dir / f"task_{t}" / "adapter_model.safetensors").write_bytes(bytes([t]) * 64)
        write_manifest(arm_dir / f"task_{t}")


def test_an_arm_is_finished_when_its_matrix_holds_every_row_and_its_adapters_verify(tmp_path, caplog):
    recipe = recipe_from_dict(tiny_recipe(tmp_path, arms=[{"name": "sft"}, {"name": "multitask_sft"}]))
    arm_dir = continual.seed_dir(recipe.run_dir, recipe.seed) / "sft"
    arm_dir.mkdir(parents=True)
    assert not continual.arm_finished(recipe, "sft")
    tasks = len(recipe.tasks)
    _sealed_adapters(arm_dir, tasks)
    atomic_write_json(arm_dir / "matrix.json", {"tasks": [], "R": [[0.0]] * tasks})
    assert not continual.arm_finished(recipe, "sft")
    atomic_write_json(arm_dir / "matrix.json", {"tasks": [], "R": [[0.0]] * (tasks + 1)})
    assert continual.arm_finished(recipe, "sft")
    # a unit scheduler (Ray) asks this before it skips a unit: a damaged first adapter runs it again
    (arm_dir / "task_1" / "adapter_model.safetensors").write_bytes(b"\x01" * 10)
    with caplog.at_level(logging.WARNING):
        assert not continual.arm_finished(recipe, "sft")
    assert f"task adapter {arm_dir / 'task_1'} is damaged" in caplog.text
    joint_dir = arm_dir.parent / "multitask_sft"
    _sealed_adapters(joint_dir, 1)
    atomic_write_json(joint_dir / "matrix.json", {"tasks": [], "R": [[0.0]] * 2, "joint": True})
    assert continual.arm_finished(recipe, "multitask_sft")
    assert json.loads((joint_dir / "matrix.json").read_text())["joint"] is True


def test_a_run_saved_with_a_single_seed_keeps_it_when_seeds_are_added(tmp_path):
    """A recipe.yaml written by an earlier version holds `seed` and no `seeds`."""
    recipe = recipe_from_dict(tiny_recipe(tmp_path, seed=3))
    saved = recipe.model_dump(mode="json")
    saved.pop("seeds", None)
    recipe.run_dir.mkdir(parents=True)
    (recipe.run_dir / "recipe.yaml").write_text(yaml.safe_dump(saved))
    continual.prepare_run_dir(recipe.model_copy(update={"seed": 5}))
    assert yaml.safe_load((recipe.run_dir / "recipe.yaml").read_text())["seeds"] == [3, 5]


def test_a_run_resumes_with_the_trainer_offload_switched_or_unknown_to_its_saved_recipe(tmp_path):
    """rollout.offload_trainer moves memory, not numbers: a run saved with the other value, or by a
    version without the key, resumes; another rollout setting is still a different recipe."""
    recipe = recipe_from_dict(tiny_recipe(tmp_path))
    saved = recipe.model_dump(mode="json")
    saved["rollout"].pop("offload_trainer")
    recipe.run_dir.mkdir(parents=True)
    (recipe.run_dir / "recipe.yaml").write_text(yaml.safe_dump(saved))
    assert continual.prepare_run_dir(recipe) == recipe.run_dir
    off = recipe.model_copy(update={"rollout": recipe.rollout.model_copy(update={"offload_trainer": False})})
    assert continual.prepare_run_dir(off) == recipe.run_dir
    other = recipe.model_copy(update={"rollout": recipe.rollout.model_copy(update={"max_num_seqs": 7})})
    with pytest.raises(UserError, match="different recipe"):
        continual.prepare_run_dir(other)
