"""Task registry. Importing this package registers every task type shipped with lite-cpt."""

from lite_cpt.tasks.base import (
    BENCHMARK_TYPES,
    TASK_TYPES,
    Sample,
    Task,
    build_task,
    register_task,
)
from lite_cpt.tasks import mini  # noqa: F401  (registers the mini-seven task types)
from lite_cpt.tasks import choice, mathqa, vqa  # noqa: F401  (registers the real-dataset task types)
from lite_cpt.tasks import custom  # noqa: F401  (registers `custom`, the task declared in a recipe)

__all__ = ["BENCHMARK_TYPES", "TASK_TYPES", "Sample", "Task", "build_task", "register_task"]
