"""The time plan a run prints at the start of each arm and logs beside each task's measured
seconds: only from a calibration of the device the run is on (`lite-cpt bench gpu` names its
device); without one the run says so in one line and logs no prediction, so no report compares
a reference card's hours with a CPU's seconds.

The predictions are made once per (seed, arm) with the unit's plan (lite_cpt.run.unit_plan);
the functions here only say and log them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lite_cpt.planner.calibration import Calibration, calibration_here, device_label
from lite_cpt.planner.timeplan import predicted_record
from lite_cpt.train.rollout import model_device


@dataclass(frozen=True)
class TimePlan:
    """An arm's predicted phases on the device this run is on (None: no calibration of it)."""

    predictions: list | None
    calibrated_on: str | None  # the calibration's device, when it is this one
    running: str  # the device this run is on
    why_not: str  # why there is no prediction, when there is none


def calibration_of(model, calibration: Calibration | None) -> tuple[Calibration | None, str, str]:
    """(the calibration if it describes the device `model` is on, why not, that device)."""
    running = device_label(model_device(model))
    return (*calibration_here(calibration, running), running)


def prediction_record(time: TimePlan, index: int) -> dict:
    """The time plan's seconds for phase `index` of the arm, to log beside the measured ones
    (only from a calibration of the device measured, which both records name)."""
    if time.predictions is None:
        return {"device": time.running}
    return {"predicted_seconds": predicted_record(time.predictions[index - 1]), "predicted_on": time.calibrated_on,
            "device": time.running}


def say_time_plan(time: TimePlan, arm: str, say: Callable[[str], None]) -> None:
    """Say the arm's time plan (hours per phase) on the device this run is on, or one line
    saying why there is none."""
    if time.calibrated_on is None:
        say(f"[dim]{arm}: {time.why_not}[/]")
        return
    if time.predictions is None:
        return
    totals: dict[str, float] = {}
    for record in time.predictions:
        for key, value in predicted_record(record).items():
            if key != "train":
                totals[key] = totals.get(key, 0.0) + value
    parts = ", ".join(f"{k} {v / 3600:.2f}" for k, v in totals.items())
    say(f"[dim]{arm}: time plan on {time.calibrated_on}: {sum(totals.values()) / 3600:.2f} h ({parts})[/]")
