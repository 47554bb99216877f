"""Reading a task's split as the run uses it: the unusable items skipped (lite_cpt.data.quality)
and, where the task drops them, the over-long prompts (lite_cpt.train.overlong), each counted and
named in the log. The run loop's training and evaluation sets and `lite-cpt eval`'s sets are read
through it alike, so every command scores the same rows."""

from __future__ import annotations

import logging

from lite_cpt.data.quality import describe_bad, screen
from lite_cpt.tasks.base import Task
from lite_cpt.train.overlong import drop_overlong

log = logging.getLogger(__name__)


def load_samples(task: Task, split: str, size: int | None, processor=None) -> list:
    """`size` samples of the split without its unusable items (bad image, empty question,
    missing answer) and, where the task drops them, its over-long prompts (`processor` counts
    their tokens): each skipped, counted and named in the log."""
    samples = task.load(split, size)
    good, bad = screen(samples)
    if bad:
        log.warning("%s: skipped %d of %d items of split '%s': %s", task.name, len(bad), len(samples), split,
                    describe_bad(bad, len(samples)))
    fitting, overlong = drop_overlong(task, good, processor)
    if overlong:
        shown = ", ".join(overlong[:3]) + (f" and {len(overlong) - 3} more" if len(overlong) > 3 else "")
        log.warning("%s: dropped %d of %d items of split '%s' whose prompt is over max_prompt_tokens=%d "
                    "(overlong_prompts: drop): %s", task.name, len(overlong), len(samples), split,
                    task.config.max_prompt_tokens, shown)
    return fitting
