"""Each tracker's store read back after a run that is SIGKILLed, resumed, stopped by SIGTERM
and resumed again: one tracker run per unit, every step once, the matrix equal to matrix.json.

One run serves all three trackers (the recipe enables them together): sft on two tasks of
three steps each, a checkpoint every two updates.
    process 1: steps 1-3, task 1 ends, step 4, SIGKILL during step 5 (no checkpoint in task 2
               yet: the resume redoes step 4, which the stores already hold)
    process 2: steps 4, 5; SIGTERM during step 5 -> checkpoint after it, exit 75
    process 3: step 6, task 2 ends, finished
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lite_cpt.io import read_jsonl
from lite_cpt.recipe import recipe_from_dict
from lite_cpt.tiny.base import ensure_tiny_base
from lite_cpt.tracking.wandb_files import exit_code, history_rows, run_files
from tests.faults import KillPoint, killed, run_child
from tests.helpers import tiny_recipe, write_recipe

pytestmark = pytest.mark.slow
pytest.importorskip("wandb")
pytest.importorskip("mlflow")

STEPS = 6


def _sigterm_at_second_update():
    """In the child: a SIGTERM while update 2 of this process is computed (training defers it)."""
    import lite_cpt.train.sft as sft

    original, calls = sft._accumulate, [0]

    def accumulate(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    sft._accumulate = accumulate


@pytest.fixture(scope="module")
def stopped_twice(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracked")
    raw = tiny_recipe(tmp, tasks=("mini_clevr", "mini_geometry"), arms=[{"name": "sft", "lr": 5e-3, "batch_size": 2}],
                      checkpoint={"every_updates": 2, "every_minutes": None},
                      logging={"tensorboard": True, "wandb": True, "mlflow": True})
    for task in raw["tasks"]:
        task.update(train_size=6, test_size=2)
    raw["evaluation"]["general"][0]["size"] = 2
    recipe = write_recipe(tmp / "tracked.yaml", raw)
    ensure_tiny_base(recipe_from_dict(raw))  # built before the runs, whose training calls are counted
    cwd = os.getcwd()
    os.chdir(tmp)  # a store written relative to the working directory would land here
    try:
        assert killed(run_child(recipe, kill=KillPoint("step 5", "lite_cpt.train.sft._accumulate", 5, after=True)))
        preempted = run_child(recipe, setup=_sigterm_at_second_update)
        assert os.WIFEXITED(preempted) and os.WEXITSTATUS(preempted) == 75
        after_sigterm = _mlflow_runs(tmp / "runs" / "t")
        assert os.WEXITSTATUS(run_child(recipe)) == 0
    finally:
        os.chdir(cwd)
    run_dir = tmp / "runs" / "t"
    arm_dir = run_dir / "seed_0" / "sft"
    return {"tmp": tmp, "run_dir": run_dir, "arm_dir": arm_dir, "after_sigterm": after_sigterm,
            "matrix": json.loads((arm_dir / "matrix.json").read_text())["R"],
            "general": json.loads((arm_dir / "general.json").read_text())["G"],
            "state": json.loads((arm_dir / "tracking.json").read_text()),
            "losses": [r["loss"] for r in read_jsonl(arm_dir / "metrics.jsonl") if r["event"] == "step"]}


def _expected_cells(run) -> dict[str, float]:
    """matrix/... and general/... cells from matrix.json and general.json."""
    cells = {}
    for label, row, general in zip(("base", "clevr", "geometry"), run["matrix"], run["general"]):
        cells.update({f"matrix/after_{label}/{task}": v for task, v in zip(("clevr", "geometry"), row)})
        cells[f"general/after_{label}/pope"] = general[0]
    cells["matrix/after_clevr/seen_mean"] = run["matrix"][1][0]
    cells["matrix/after_geometry/seen_mean"] = sum(run["matrix"][2]) / 2
    return cells


def _mlflow_runs(run_dir):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name == "t"]
    return client, client.search_runs([experiment.experiment_id])


def test_the_run_went_through_a_kill_a_preemption_and_two_resumes(stopped_twice):
    assert stopped_twice["matrix"] and len(stopped_twice["losses"]) == STEPS


def test_tensorboard_holds_every_step_once_and_the_matrix(stopped_twice):
    log_dir = stopped_twice["run_dir"] / "tensorboard" / "seed_0" / "sft"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 3  # one file per process
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, STEPS + 1))
    assert [e.value for e in losses] == pytest.approx(stopped_twice["losses"], rel=1e-6)  # float32 store
    for key, value in _expected_cells(stopped_twice).items():
        points = events.Scalars(key)
        assert len(points) == 1 and points[0].value == np.float32(value), key
    assert [e.step for e in events.Scalars("matrix/after_base/clevr")] == [0]
    assert [e.step for e in events.Scalars("matrix/after_geometry/clevr")] == [STEPS]  # the train step at task end
    assert [e.step for e in events.Scalars("accuracy/clevr")] == [0, 3, STEPS]
    assert "recipe/text_summary" in events.Tags()["tensors"]  # the recipe as text beside the scalars
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")  # and in the HParams tab


def test_wandb_holds_one_run_for_the_unit_every_record_once_and_the_matrix(stopped_twice):
    run_id = stopped_twice["state"]["wandb_run_id"]
    wandb_dir = stopped_twice["run_dir"] / "wandb"
    files = run_files(wandb_dir, run_id)
    assert len(files) == 3 and len(list(wandb_dir.glob("offline-run-*"))) == 3  # three processes, one run id
    assert [exit_code(path) for path in files] == [None, 75, 0]  # killed, preempted, finished
    rows = [row for path in files for row in history_rows(path)]
    records = read_jsonl(stopped_twice["arm_dir"] / "metrics.jsonl")
    assert sorted(row["_step"] for row in rows) == list(range(len(records) + 1))  # the base row, then each record
    train = sorted((row["train_step"], row["train/loss"]) for row in rows if "train/loss" in row)
    assert train == list(zip(range(1, STEPS + 1), stopped_twice["losses"]))
    logged = {key: value for row in rows for key, value in row.items()}
    for key, value in _expected_cells(stopped_twice).items():
        assert sum(key in row for row in rows) == 1 and logged[key] == value, key


def test_mlflow_holds_one_run_every_step_once_the_matrix_and_the_recipe(stopped_twice):
    client, [after_sigterm] = stopped_twice["after_sigterm"]
    client, [run] = _mlflow_runs(stopped_twice["run_dir"])
    assert run.info.run_id == after_sigterm.info.run_id == stopped_twice["state"]["mlflow_run_id"]
    assert after_sigterm.info.status == "KILLED" and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == list(zip(range(1, STEPS + 1), stopped_twice["losses"]))
    for key, value in _expected_cells(stopped_twice).items():
        [point] = client.get_metric_history(run.info.run_id, key)
        assert point.value == value, key
    assert run.data.params["arms.sft.lr"] == "0.005" and run.data.params["arm"] == "sft"
    artifacts = stopped_twice["run_dir"] / "mlflow-artifacts"
    assert [p.name for p in artifacts.rglob("recipe.yaml")] == ["recipe.yaml"]
    assert not (stopped_twice["tmp"] / "mlruns").exists()
