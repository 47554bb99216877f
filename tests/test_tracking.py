"""Experiment tracking: the scalars a record becomes, and each tracker's store read back."""

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lite_cpt.errors import UserError
from lite_cpt.io import append_jsonl, truncate_jsonl
from lite_cpt.recipe import recipe_from_dict
from lite_cpt.tracking.tracker import RunTracker, scalars_of
from tests.helpers import tiny_recipe

TASKS, BENCHES = ["clevr", "geometry", "pathvqa"], ["pope"]


def test_a_step_record_keeps_its_numbers_and_drops_bookkeeping():
    record = {"event": "step", "task_index": 2, "task": "clevr", "step": 7, "loss": 0.5, "tokens": 120,
              "updated": True}
    assert scalars_of(record, TASKS, BENCHES) == {"train/loss": 0.5, "train/tokens": 120.0}


def test_a_task_end_record_becomes_its_matrix_row_benchmarks_and_seconds():
    record = {"event": "task_end", "task_index": 2, "task": "geometry", "train_seconds": 1.5, "eval_seconds": 0.25,
              "policy_updates": 3, "final_loss": None, "phase_seconds": {"sft_step": 1.25},
              "predicted_seconds": {"sft_step": 2.0, "train": 2.0}, "scores": [0.5, 0.25, 0.125], "general": [0.75]}
    assert scalars_of(record, TASKS, BENCHES) == {
        "task": 2.0,
        "matrix/after_geometry/clevr": 0.5, "matrix/after_geometry/geometry": 0.25,
        "matrix/after_geometry/pathvqa": 0.125, "matrix/after_geometry/seen_mean": 0.375,  # (0.5 + 0.25) / 2
        "accuracy/clevr": 0.5, "accuracy/geometry": 0.25, "accuracy/pathvqa": 0.125, "accuracy/seen_mean": 0.375,
        "general/after_geometry/pope": 0.75, "general/pope": 0.75,
        "seconds/train": 1.5, "seconds/eval": 0.25, "seconds/sft_step": 1.25,
        "seconds/predicted/sft_step": 2.0, "seconds/predicted/train": 2.0,
        "task_end/policy_updates": 3.0,
    }


def test_a_joint_arms_one_phase_has_seen_every_task():
    record = {"event": "task_end", "task_index": 1, "task": "joint", "scores": [0.5, 0.25, 0.0], "general": []}
    assert scalars_of(record, TASKS, BENCHES)["matrix/after_joint/seen_mean"] == 0.25


def _tensorboard_points(directory, tag):
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tensorboard_hides_what_a_killed_process_wrote_past_the_resume_point(tmp_path):
    recipe = recipe_from_dict(tiny_recipe(tmp_path, logging={"tensorboard": True}))
    metrics = tmp_path / "run" / "seed_1" / "sft" / "metrics.jsonl"
    metrics.parent.mkdir(parents=True)

    def log(tracker, loss):
        record = {"event": "step", "task_index": 1, "loss": loss}
        append_jsonl(metrics, record)
        tracker.log("sft", record, metrics)

    first = RunTracker(recipe, tmp_path / "run", seed=1)
    for loss in (1.0, 2.0, 3.0, 4.0):
        log(first, loss)  # then killed: no close
    truncate_jsonl(metrics, keep=2)  # the resume point (a checkpoint) had seen two steps
    second = RunTracker(recipe, tmp_path / "run", seed=1)
    for loss in (30.0, 40.0):
        log(second, loss)
    second.close()
    points = _tensorboard_points(tmp_path / "run" / "tensorboard" / "seed_1" / "sft", "train/loss")
    assert points == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_no_tracker_is_required(tmp_path):
    tracker = RunTracker(recipe_from_dict(tiny_recipe(tmp_path)), tmp_path / "run", seed=0)
    tracker.log("sft", {"event": "step", "loss": 1.0})
    tracker.close()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tracker, package", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_an_enabled_tracker_that_is_not_installed_names_the_fix(tmp_path, monkeypatch, tracker, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    recipe = recipe_from_dict(tiny_recipe(tmp_path, logging={tracker: True}))
    with pytest.raises(UserError, match=rf"logging.{tracker} needs the {package} package: pip install -e '.\[tracking\]'"):
        RunTracker(recipe, tmp_path / "run", seed=0).log("sft", {"event": "step", "loss": 1.0})


def test_a_missing_tracker_package_is_one_message_naming_the_extra_and_the_switch():
    from lite_cpt.errors import UserError
    from lite_cpt.tracking.backends import tracker_module

    with pytest.raises(UserError, match=r"logging.wandb needs the wandb package: pip install -e '.\[tracking\]' "
                                        r"\(or set logging.wandb=false\)"):
        tracker_module("wandb", "lite_cpt_no_such_tracker_client", "wandb")
