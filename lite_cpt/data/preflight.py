"""Preflight: before a run loads the model, check every task's and benchmark's data.

For each real task and general benchmark of the recipe: its source is found, each split it
uses exists, the split has enough rows for the recipe's budget (`train_size`, `test_size`,
`size`), the items the recipe draws are usable (images decode, question and answer present;
at most `faults.max_bad_data_fraction` of them may not be) and one renders (its prompt). Every problem is
collected, each with its fix, and reported at once, so nothing trains until all data is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lite_cpt.data.quality import describe_bad, screen
from lite_cpt.errors import UserError
from lite_cpt.tasks import build_task
from lite_cpt.tasks.real import RealTask


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


def _budgets(cfg: Any, benchmark: bool) -> list[tuple[str, str, int | None]]:
    """(split, size key, size) of each split the recipe reads from this section."""
    if benchmark:
        return [(cfg.source.test_split, "size", cfg.size)]
    return [(cfg.source.train_split, "train_size", cfg.train_size),
            (cfg.source.test_split, "test_size", cfg.test_size)]


def check_section(recipe: Any, key: str, cfg: Any, benchmark: bool) -> list[DataProblem]:
    """The problems of one task or benchmark (none for synthetic tasks, which generate data)."""
    task = build_task(cfg, recipe.data.root, recipe.seed, benchmark=benchmark)
    if not isinstance(task, RealTask):
        return []
    where = f"{key} ({cfg.name})"
    location = task.location()
    if location.available() is None:
        problem, _, fix = location.missing_message().partition(". To fix: ")
        return [DataProblem(where, problem, fix)]
    problems = []
    for split, size_key, size in _budgets(cfg, benchmark):
        try:
            problems += _check_split(task, where, split, f"{key}.{size_key}", size,
                                     recipe.faults.max_bad_data_fraction)
        except UserError as error:
            problems.append(DataProblem(where, f"split '{split}': {error}", _split_fix(key, split)))
    return problems


def _split_fix(key: str, split: str) -> str:
    return (f"download the split '{split}' (`lite-cpt data download RECIPE`; docs/data.md), or point "
            f"{key}.source at a dataset that has it")


def _check_split(task: RealTask, where: str, split: str, size_key: str, size: int | None,
                 max_bad: float) -> list[DataProblem]:
    available = task.count(split)
    if available == 0:
        return [DataProblem(where, f"split '{split}' has no usable rows", _split_fix(where.split()[0], split))]
    problems = []
    if size is not None and size > available:
        problems.append(DataProblem(
            where, f"split '{split}' has {available} usable rows, fewer than {size_key}={size}",
            f"set {size_key}={available} (or lower), or null to use the whole split",
        ))
    samples = task.load(split, size)
    good, bad = screen(samples)
    if len(bad) > max_bad * len(samples):
        problems.append(DataProblem(
            where, f"split '{split}': {describe_bad(bad, len(samples))}, more than "
            f"faults.max_bad_data_fraction={max_bad}",
            "repair or re-download those files (`lite-cpt data check` lists them), or raise "
            "faults.max_bad_data_fraction to train without them",
        ))
    if good:
        task.prompt(good[0])
    return problems


def preflight(recipe: Any) -> list[DataProblem]:
    """Every data problem of the recipe (empty when all data is there)."""
    problems = []
    for key, cfg, benchmark in recipe_sections(recipe):
        problems += check_section(recipe, key, cfg, benchmark)
    return problems


def require_data(recipe: Any) -> None:
    """Raise one UserError listing every data problem with its fix; return when there is none."""
    problems = preflight(recipe)
    if problems:
        root = Path(recipe.data.root) if recipe.data.root else None
        head = f"the recipe's data is not ready (data.root: {root or 'not set'}); nothing was trained:"
        raise UserError("\n".join([head, *(f"  {p}" for p in problems)]))
