"""Preflight: before a run loads the model, check every task's and benchmark's data.

For each real task and general benchmark of the recipe: its source is found, each split it
uses exists, the split has enough rows for the recipe's budget (`train_size`, `test_size`,
`size`), the items the recipe draws are usable (images decode, question and answer present;
at most `faults.max_bad_data_fraction` of them may not be) and one renders (its prompt). Every problem is
collected, each with its fix, and reported at once, so nothing trains until all data is there.

`lite-cpt data check` reads the same verdict (`inspect_section`): a recipe the preflight refuses
makes it print the same problems and exit non-zero. Unusable items within the allowed share are
named (split, count, example ids with the reason) by both, and skipped by the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lite_cpt.data.quality import BadItem, describe_bad, screen
from lite_cpt.errors import UserError
from lite_cpt.tasks import build_task
from lite_cpt.tasks.real import RealTask

log = logging.getLogger(__name__)


@dataclass
class DataProblem:
    key: str  # recipe key of the task, e.g. tasks.2 (vizwiz)
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}\n    to fix: {self.fix}"


def recipe_sections(recipe: Any) -> list[tuple[str, Any, bool]]:
    """(key, config, is_benchmark) for every task and general benchmark of the recipe."""
    sections = [(f"tasks.{i}", cfg, False) for i, cfg in enumerate(recipe.tasks)]
    sections += [(f"evaluation.general.{i}", cfg, True) for i, cfg in enumerate(recipe.evaluation.general)]
    return sections


def _budgets(cfg: Any, benchmark: bool) -> list[tuple[str, str, str, int | None]]:
    """(label, split, size key, size) of each split the recipe reads from this section."""
    if benchmark:
        return [("test", cfg.source.test_split, "size", cfg.size)]
    return [("train", cfg.source.train_split, "train_size", cfg.train_size),
            ("test", cfg.source.test_split, "test_size", cfg.test_size)]


@dataclass
class SplitCheck:
    """What one split the recipe reads holds: rows available and used, the drawn items that are
    unusable (skipped), a rendered prompt, and the problems that stop a run."""

    label: str  # "train" or "test"
    split: str
    available: int | None = None
    used: int | None = None
    drawn: int = 0
    bad: list[BadItem] = field(default_factory=list)
    prompt: str | None = None
    problems: list[DataProblem] = field(default_factory=list)

    @property
    def skipped(self) -> str | None:
        """"split 'train': 2 of 8 items unusable (id: missing answer; ...)", or None."""
        return f"split '{self.split}': {describe_bad(self.bad, self.drawn)}" if self.bad else None


@dataclass
class SectionCheck:
    """The verdict on one task or benchmark, shared by the run's preflight and `data check`."""

    where: str  # e.g. "tasks.2 (vizwiz)"
    task: Any
    missing: DataProblem | None = None
    splits: list[SplitCheck] = field(default_factory=list)

    @property
    def problems(self) -> list[DataProblem]:
        own = [self.missing] if self.missing else []
        return own + [p for split in self.splits for p in split.problems]


def inspect_section(recipe: Any, key: str, cfg: Any, benchmark: bool) -> SectionCheck:
    """Check one task or benchmark (a synthetic one, which generates its data, has no splits)."""
    task = build_task(cfg, recipe.data.root, recipe.seed, benchmark=benchmark)
    check = SectionCheck(f"{key} ({cfg.name})", task)
    if not isinstance(task, RealTask):
        return check
    location = task.location()
    if location.available() is None:
        problem, _, fix = location.missing_message().partition(". To fix: ")
        check.missing = DataProblem(check.where, problem, fix)
        return check
    for label, split, size_key, size in _budgets(cfg, benchmark):
        result = SplitCheck(label, split)
        try:
            _check_split(task, check.where, result, f"{key}.{size_key}", size, recipe.faults.max_bad_data_fraction)
        except UserError as error:
            result.problems.append(DataProblem(check.where, f"split '{split}': {error}", _split_fix(key, split)))
        check.splits.append(result)
    return check


def check_section(recipe: Any, key: str, cfg: Any, benchmark: bool) -> list[DataProblem]:
    """The problems of one task or benchmark (none for synthetic tasks, which generate data)."""
    return inspect_section(recipe, key, cfg, benchmark).problems


def _split_fix(key: str, split: str) -> str:
    return (f"download the split '{split}' (`lite-cpt data download RECIPE`; docs/data.md), or point "
            f"{key}.source at a dataset that has it")


def _check_split(task: RealTask, where: str, result: SplitCheck, size_key: str, size: int | None,
                 max_bad: float) -> None:
    split = result.split
    result.available = available = task.count(split)
    if available == 0:
        result.problems.append(DataProblem(where, f"split '{split}' has no usable rows",
                                           _split_fix(where.split()[0], split)))
        return
    result.used = available if size is None else min(size, available)
    if size is not None and size > available:
        result.problems.append(DataProblem(
            where, f"split '{split}' has {available} usable rows, fewer than {size_key}={size}",
            f"set {size_key}={available} (or lower), or null to use the whole split",
        ))
    samples = task.load(split, size)
    good, result.bad = screen(samples)
    result.drawn = len(samples)
    if len(result.bad) > max_bad * len(samples):
        result.problems.append(DataProblem(
            where, f"{result.skipped}, more than faults.max_bad_data_fraction={max_bad}",
            "repair or re-download those files (`lite-cpt data check` lists them), or raise "
            "faults.max_bad_data_fraction to train without them",
        ))
    if good:
        result.prompt = task.prompt(good[0])


def inspect_recipe(recipe: Any) -> list[SectionCheck]:
    """The verdict on every task and general benchmark of the recipe, in recipe order."""
    return [inspect_section(recipe, key, cfg, benchmark) for key, cfg, benchmark in recipe_sections(recipe)]


def preflight(recipe: Any) -> list[DataProblem]:
    """Every data problem of the recipe (empty when all data is there)."""
    return [problem for section in inspect_recipe(recipe) for problem in section.problems]


def require_data(recipe: Any) -> None:
    """Raise one UserError listing every data problem with its fix; return when there is none.
    Unusable items below the allowed share are named in a warning: the run skips them."""
    sections = inspect_recipe(recipe)
    for section in sections:
        for split in section.splits:
            if split.skipped and not split.problems:
                log.warning("%s: %s; they are skipped (never trained on or scored)", section.where, split.skipped)
    problems = [problem for section in sections for problem in section.problems]
    if problems:
        root = Path(recipe.data.root) if recipe.data.root else None
        head = f"the recipe's data is not ready (data.root: {root or 'not set'}); nothing was trained:"
        raise UserError("\n".join([head, *(f"  {p}" for p in problems)]))
