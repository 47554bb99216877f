"""The time plan a run prints at the start of each arm and logs beside each task's measured
seconds: only from a calibration of the device the run is on (`lite-cpt bench gpu` names its
device); without one the run says so in one line and logs no prediction, so no report compares
a reference card's hours with a CPU's seconds."""

from __future__ import annotations

from typing import Callable

from lite_cpt.planner import resolve_knobs
from lite_cpt.planner.calibration import Calibration, calibration_here, device_label
from lite_cpt.planner.timeplan import predicted_phases, predicted_record
from lite_cpt.recipe_run import ArmConfig
from lite_cpt.train.rollout import model_device


def _calibration(ws) -> tuple[Calibration | None, str, str]:
    """(the calibration if it describes the device this run is on, why not, that device)."""
    running = device_label(model_device(ws.model))
    return (*calibration_here(ws.calibration, running), running)


def prediction_record(ws, arm: ArmConfig, knobs, index: int) -> dict:
    """The time plan's seconds for phase `index` of the arm, to log beside the measured ones
    (only from a calibration of the device measured, which both records name)."""
    cal, _, running = _calibration(ws)
    predictions = predicted_phases(ws.recipe, arm, knobs, cal) if cal is not None else None
    if predictions is None:
        return {"device": running}
    return {"predicted_seconds": predicted_record(predictions[index - 1]), "predicted_on": cal.device,
            "device": running}


def say_time_plan(ws, arm: ArmConfig, say: Callable[[str], None]) -> None:
    """Say the arm's time plan (hours per phase) on the device this run is on, or one line
    saying why there is none."""
    cal, why_not, _ = _calibration(ws)
    if cal is None:
        say(f"[dim]{arm.name}: {why_not}[/]")
        return
    predictions = predicted_phases(ws.recipe, arm, resolve_knobs(ws.recipe, arm.name), cal)
    if predictions is None:
        return
    totals: dict[str, float] = {}
    for record in predictions:
        for key, value in predicted_record(record).items():
            if key != "train":
                totals[key] = totals.get(key, 0.0) + value
    device = cal.device
    parts = ", ".join(f"{k} {v / 3600:.2f}" for k, v in totals.items())
    say(f"[dim]{arm.name}: time plan on {device}: {sum(totals.values()) / 3600:.2f} h ({parts})[/]")
