"""`lite-cpt plan --hours H`: the training rows per task that fit an arm into H hours.

The time plan is monotonic in the rows an arm trains on, so the largest N such that the recipe
with every task's `train_size` set to N (what `--set tasks.*.train_size=N` does) is predicted
within H is found by bisection over the plan itself. A split with fewer rows than N trains on
all of them, so the prediction is then an upper bound. Evaluation sizes are left as the recipe states them: they
keep the comparison meaningful, and their cost is reported so that a budget they alone exceed
says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from lite_cpt.errors import UserError
from lite_cpt.planner.plan import plan
from lite_cpt.planner.calibration import Calibration


@dataclass(frozen=True)
class RowBudget:
    """The largest rows per task an arm can train on within `hours`, and what it costs."""

    arm: str
    hours: float
    train_rows_per_task: int | None  # None: not even one row per task fits (evaluation alone is over)
    predicted_hours: float | None  # at that many rows
    recipe_hours: float  # at the recipe's own sizes
    evaluation_hours: float

    def override(self) -> str | None:
        return None if self.train_rows_per_task is None else f"tasks.*.train_size={self.train_rows_per_task}"

    def to_json(self) -> dict:
        return {"arm": self.arm, "hours": self.hours, "train_rows_per_task": self.train_rows_per_task,
                "predicted_hours": self.predicted_hours, "recipe_hours": self.recipe_hours,
                "evaluation_hours": self.evaluation_hours, "override": self.override()}


#: How far above the recipe's largest train_size the search looks.
GROWTH = 100


def with_rows(recipe, rows: int):
    """The recipe with every task's train_size set to `rows`."""
    tasks = [task.model_copy(update={"train_size": rows}) for task in recipe.tasks]
    return recipe.model_copy(update={"tasks": tasks})


def arm_hours(recipe, arm: str, gpu_gb: float, calibration: Calibration | None) -> tuple[float, float]:
    """(total hours, evaluation hours) the time plan predicts for `arm`."""
    time = plan(recipe, gpu_gb, arm=arm, calibration=calibration).arms[arm].time
    if time.hours is None:
        raise UserError(f"cannot fit arm '{arm}' into hours: {time.unknown}")
    return time.hours, time.seconds.get("evaluation", 0.0) / 3600


def rows_for_hours(recipe, hours: float, arm: str, gpu_gb: float, calibration: Calibration | None = None) -> RowBudget:
    """The largest train_size for every task with `arm` predicted within `hours`."""
    if hours <= 0:
        raise UserError(f"--hours must be positive, got {hours}")
    if any(task.train_size is None for task in recipe.tasks):
        raise UserError("--hours needs every task's train_size (a task has null: all rows, whose count the plan "
                        "does not know)")
    recipe_hours, evaluation = arm_hours(recipe, arm, gpu_gb, calibration)
    low, high = 0, GROWTH * max(task.train_size for task in recipe.tasks)  # low fits (0: none yet); high + 1 does not
    predicted = None
    while low < high:
        middle = (low + high + 1) // 2
        middle_hours, _ = arm_hours(with_rows(recipe, middle), arm, gpu_gb, calibration)
        if middle_hours <= hours:
            low, predicted = middle, middle_hours
        else:
            high = middle - 1
    return RowBudget(arm=arm, hours=hours, train_rows_per_task=low or None, predicted_hours=predicted,
                     recipe_hours=recipe_hours, evaluation_hours=evaluation)
