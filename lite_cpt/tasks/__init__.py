"""The task registry: every task type and general benchmark type a recipe can name.

Each module in this folder may define task classes (`lite_cpt.tasks.base.Task`) that register with
`@TASK_TYPES.register` or `@BENCHMARK_TYPES.register` under their `type_name`; importing this
package discovers every module (lite_cpt/registry.py), so adding a task type is adding one module
here (or one class to an existing one). A type with recipe fields of its own declares them as its
`settings` (`custom`: lite_cpt/tasks/custom_settings.py).
"""

from lite_cpt.registry import discover
from lite_cpt.tasks.base import BENCHMARK_TYPES, TASK_TYPES, Sample, Task, build_task

discover(__name__)

__all__ = ["BENCHMARK_TYPES", "TASK_TYPES", "Sample", "Task", "build_task"]
