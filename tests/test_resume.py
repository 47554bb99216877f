"""Resume on a run whose numbers mean something, and the write order that makes it safe.

The recipe here is small but its accuracy matrix has signal: SFT learns the first task, forgets
it on the second, and the general benchmark moves, so a resumed run that starts from the wrong
adapter or skips a task ends with visibly different numbers (and different adapters).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lite_cpt.run.continual as continual
import lite_cpt.run.rows as rows_module
from lite_cpt.run.continual import run_recipe
from lite_cpt.io import read_jsonl
from lite_cpt.results.metrics import summarize
from lite_cpt.recipe import recipe_from_dict
from tests.helpers import tiny_recipe

pytestmark = pytest.mark.slow

TASKS = ("mini_scienceqa", "mini_pathvqa", "mini_clevr")


def signal_recipe(tmp_path: Path):
    raw = tiny_recipe(tmp_path, tasks=TASKS, name="signal", arms=[{"name": "sft", "lr": 1e-2, "batch_size": 8}])
    for task in raw["tasks"]:
        task.update(test_size=16, epochs=2)
    return recipe_from_dict(raw)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def adapters(arm_dir: Path) -> dict[int, dict[str, torch.Tensor]]:
    return {t: load_file(str(arm_dir / f"task_{t}" / "adapter_model.safetensors")) for t in (1, 2, 3)}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run; every row it writes is checked to be the last file of its task."""
    recipe = signal_recipe(tmp_path_factory.mktemp("reference"))
    write = rows_module.write_checked_json
    checked = []

    def checking_write(path, obj):
        path = Path(path)
        if path.name == "matrix.json" and len(obj["R"]) > 1:
            # The row is the resume marker: what it stands for must already be on disk.
            task = len(obj["R"]) - 1
            assert (path.parent / f"task_{task}" / "adapter_model.safetensors").exists()
            assert len(read(path.parent / "general.json")["G"]) == len(obj["R"])
            checked.append(task)
        write(path, obj)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rows_module, "write_checked_json", checking_write)
        run_dir = run_recipe(recipe)
    assert checked == [1, 2, 3]
    return run_dir / "seed_0" / "sft"


def test_the_test_recipe_has_signal(reference_run):
    R = read(reference_run / "matrix.json")["R"]
    G = read(reference_run / "general.json")["G"]
    assert len({x for row in R for x in row}) >= 3, R
    assert sum(1 for row in R[1:] for x in row if x > 0) >= 2, R
    assert summarize(R)["BWT"] != 0, R
    assert len({row[0] for row in G}) >= 2, G


def test_a_kill_between_the_two_writes_of_a_row_leaves_no_marker_and_resume_matches(reference_run, tmp_path,
                                                                                       monkeypatch):
    recipe = signal_recipe(tmp_path)
    arm_dir = recipe.run_dir / "seed_0" / "sft"
    write = rows_module.write_checked_json

    def killed_after_the_first_write_of_row_2(path, obj):
        write(path, obj)
        rows = obj.get("G", obj.get("R")) if Path(path).name in ("general.json", "matrix.json") else []
        if len(rows) == 3:  # base row + tasks 1 and 2: the first of the row's two files is written
            raise KeyboardInterrupt("killed between the two writes of row 2")

    monkeypatch.setattr(rows_module, "write_checked_json", killed_after_the_first_write_of_row_2)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe)
    assert len(read(arm_dir / "matrix.json")["R"]) == 2, "row 2 must not be marked finished"
    assert (arm_dir / "task_2").exists(), "the kill came after task 2's adapter was saved"

    monkeypatch.setattr(rows_module, "write_checked_json", write)
    run_recipe(recipe)
    assert read(arm_dir / "matrix.json") == read(reference_run / "matrix.json")
    ends = [r["task_index"] for r in read_jsonl(arm_dir / "metrics.jsonl") if r["event"] == "task_end"]
    assert ends == [1, 2, 3], "task 2's record of the killed attempt is replaced, not repeated"
    assert read(arm_dir / "general.json") == read(reference_run / "general.json")
    resumed, reference = adapters(arm_dir), adapters(reference_run)
    for task in (1, 2, 3):
        assert resumed[task].keys() == reference[task].keys()
        for name in reference[task]:
            assert torch.equal(resumed[task][name], reference[task][name]), (task, name)
    # The adapters differ from task to task: equality above is not equality of untrained weights.
    assert any(not torch.equal(reference[1][n], reference[3][n]) for n in reference[1])


def test_a_kill_during_training_resumes_from_the_last_finished_task(reference_run, tmp_path, monkeypatch):
    recipe = signal_recipe(tmp_path)
    arm_dir = recipe.run_dir / "seed_0" / "sft"
    save = continual.save_adapter

    def killed_saving_task_3(model, path, *args, **kwargs):
        if Path(path).name == "task_3":
            raise KeyboardInterrupt("killed while saving task 3")
        return save(model, path, *args, **kwargs)

    monkeypatch.setattr(continual, "save_adapter", killed_saving_task_3)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe)
    assert len(read(arm_dir / "matrix.json")["R"]) == 3 and not (arm_dir / "task_3").exists()
    monkeypatch.setattr(continual, "save_adapter", save)
    run_recipe(recipe)
    assert read(arm_dir / "matrix.json") == read(reference_run / "matrix.json")
    final, reference = adapters(arm_dir)[3], adapters(reference_run)[3]
    assert all(torch.equal(final[n], reference[n]) for n in reference)


def test_every_arm_and_task_trains_from_its_own_seed(tmp_path, monkeypatch):
    """Phase seeds come from (run seed, arm, task): distinct across arms and tasks, and the same
    in a second process (here: a second run of the same recipe into another directory)."""
    from lite_cpt.train.phase import PhaseStats

    seeds: list[tuple[str, int, int]] = []
    build = continual.build_arm

    def recording_arm(arm, *args, **kwargs):
        method = build(arm, *args, **kwargs)
        method.train = lambda examples, phase: seeds.append((arm.name, phase.index, phase.seed)) or PhaseStats()
        return method

    monkeypatch.setattr(continual, "build_arm", recording_arm)
    arms = [{"name": "first", "method": "sft", "lr": 1e-2}, {"name": "second", "method": "sft", "lr": 1e-2}]
    for run in ("a", "b"):
        raw = tiny_recipe(tmp_path / run, tasks=("mini_pathvqa", "mini_clevr"), arms=arms)
        for task in raw["tasks"]:
            task.update(test_size=2)
        run_recipe(recipe_from_dict(raw))
    first, again = seeds[:4], seeds[4:]
    assert [(a, i) for a, i, _ in first] == [("first", 1), ("first", 2), ("second", 1), ("second", 2)]
    assert len({s for _, _, s in first}) == 4, first
    assert again == first
