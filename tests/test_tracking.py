"""Experiment tracking through one interface; TensorBoard event files written and read back."""

import json
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lite_cpt.errors import UserError
from lite_cpt.recipe import recipe_from_dict
from lite_cpt.tracking import RunTracker, scalars_of
from tests.helpers import tiny_recipe


def test_scalars_keep_numbers_and_drop_bookkeeping():
    group, scalars = scalars_of({"event": "step", "task_index": 2, "task": "clevr", "step": 7, "loss": 0.5,
                                 "tokens": 120, "updated": True})
    assert group == "train" and scalars == {"train/loss": 0.5, "train/tokens": 120.0}
    group, scalars = scalars_of({"event": "task_end", "task_index": 3, "train_seconds": 1.5, "final_loss": None})
    assert group == "task_end" and scalars == {"task_end/train_seconds": 1.5}


def test_tensorboard_event_files_round_trip_and_continue_after_a_resume(tmp_path):
    recipe = recipe_from_dict(tiny_recipe(tmp_path, logging={"tensorboard": True}))
    metrics = tmp_path / "metrics.jsonl"
    # a resumed run: three steps were logged before the stop
    metrics.write_text("".join(json.dumps({"event": "step", "loss": 9.0}) + "\n" for _ in range(3)))
    tracker = RunTracker(recipe, tmp_path / "run", seed=1)
    tracker.log("sft", {"event": "step", "task_index": 1, "loss": 0.75}, metrics)
    tracker.log("sft", {"event": "step", "task_index": 1, "loss": 0.5}, metrics)
    tracker.log("sft", {"event": "task_end", "task_index": 2, "train_seconds": 3.25}, metrics)
    tracker.close()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard" / "seed_1" / "sft"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(4, 0.75), (5, 0.5)]
    assert [(e.step, e.value) for e in events.Scalars("task_end/train_seconds")] == [(2, 3.25)]


def test_no_tracker_is_required(tmp_path):
    tracker = RunTracker(recipe_from_dict(tiny_recipe(tmp_path)), tmp_path / "run", seed=0)
    tracker.log("sft", {"event": "step", "loss": 1.0})
    tracker.close()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tracker, package", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_an_enabled_tracker_that_is_not_installed_names_the_fix(tmp_path, monkeypatch, tracker, package):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    recipe = recipe_from_dict(tiny_recipe(tmp_path, logging={tracker: True}))
    with pytest.raises(UserError, match=f"logging.{tracker} needs the {package} package: pip install {package}"):
        RunTracker(recipe, tmp_path / "run", seed=0).log("sft", {"event": "step", "loss": 1.0})
