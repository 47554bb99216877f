"""What the arms of one process share (the base model, the tasks, the evaluation sets and how
they are evaluated), and reading a task's usable examples: the run loop (continual) and the row
files (rows) both read it. It holds no recipe: the loop resolves what it needs once
(lite_cpt.run.unit_plan)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from lite_cpt.planner.calibration import Calibration
from lite_cpt.run.evaluate import EvalSet
from lite_cpt.run.splits import load_samples
from lite_cpt.run.unit_plan import EvaluationPlan
from lite_cpt.tasks.base import Task
from lite_cpt.tracking.tracker import RunTracker
from lite_cpt.train.phase import Example, examples_of

log = logging.getLogger(__name__)


@dataclass
class Workspace:
    """Everything the arms share within one process and seed: base model, tasks, evaluation sets."""

    run_dir: Path  # <run>/seed_<k>/
    model: object  # PeftModel with one adapter, re-initialised per arm
    processor: object
    tasks: list[Task]
    evalsets: list[EvalSet]
    general: list[EvalSet]
    console: Console | None
    _train_cache: dict
    evaluation: EvaluationPlan  # generation settings (batch resolved) of every row of this seed
    calibration: Calibration | None = None  # throughputs of the time plan (used on its own device only)
    tracker: RunTracker | None = None
    rollout_engine: object | None = None  # vLLM (recipe rollout.backend), built by the first GRPO phase or evaluation

    def train_examples(self, task_name: str) -> list[Example]:
        if task_name not in self._train_cache:
            task = next(t for t in self.tasks if t.name == task_name)
            self._train_cache[task_name] = load_examples(task, task.config.source.train_split, task.config.train_size,
                                                         self.processor)
        return self._train_cache[task_name]


def load_examples(task: Task, split: str, size: int | None, processor=None) -> list[Example]:
    return examples_of(task, load_samples(task, split, size, processor))
