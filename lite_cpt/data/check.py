"""What data a recipe will read: `data_check` (the `lite-cpt data check` table) and
`check_sources` (the missing-data part of recipe validation, cheap: no dataset is opened)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lite_cpt.data.preflight import inspect_section, recipe_sections
from lite_cpt.tasks import BENCHMARK_TYPES, TASK_TYPES, build_task
from lite_cpt.tasks.real import RealTask, is_real_task_type


def _source_key(key: str, source: Any) -> str:
    if source.path is not None:
        return f"{key}.source.path"
    return f"{key}.source.hf_id" if source.hf_id is not None else f"{key}.source"


def check_sources(recipe: Any) -> list[str]:
    """One line per real task or benchmark whose data is neither at its local path nor in the
    Hugging Face cache: `<key>: <what is missing>. To fix: <how to provide it>`."""
    root = Path(recipe.data.root) if recipe.data.root else None
    problems = []
    for key, cfg, benchmark in recipe_sections(recipe):
        cls = (BENCHMARK_TYPES if benchmark else TASK_TYPES).get(cfg.type)
        if not is_real_task_type(cls):
            continue
        location = cls(cfg.name, config=cfg, data_root=root, seed=recipe.seed).location()
        if location.available() is None:
            problems.append(f"{_source_key(key, cfg.source)}: {location.missing_message()}")
    return problems


def data_check(recipe: Any) -> list[dict]:
    """For each task and general benchmark: where its data is (`status` found / missing /
    error / synthetic), how many samples each split has and how many the recipe uses, how many
    of those are unusable (skipped), one rendered prompt, and every problem with its fix. The
    verdict is the preflight's (`inspect_section`): status `error` exactly where a run would stop."""
    return [_check_one(recipe, key, cfg, benchmark) for key, cfg, benchmark in recipe_sections(recipe)]


def _check_one(recipe: Any, key: str, cfg: Any, benchmark: bool) -> dict:
    train_size = None if benchmark else cfg.train_size
    test_size = cfg.size if benchmark else cfg.test_size
    row: dict[str, Any] = {
        "key": key, "name": cfg.name, "type": cfg.type, "kind": "benchmark" if benchmark else "task",
        "status": "found", "source": "", "train": None, "train_available": None, "test": None,
        "test_available": None, "train_bad": None, "test_bad": None, "prompt": None, "expected": None,
        "problem": None, "fix": None,
    }
    check = inspect_section(recipe, key, cfg, benchmark)
    task = check.task
    if not isinstance(task, RealTask):
        sample = task.load(cfg.source.test_split, 1)[0]
        row.update(status="synthetic", source="generated", train=train_size, test=test_size,
                   prompt=task.prompt(sample))
        return row
    location = task.location()
    if check.missing is not None:
        row.update(status="missing", source=location.describe(), expected=location.describe(),
                   problem=check.missing.problem, fix=check.missing.fix)
        return row
    row["source"] = str(location.path) if location.available() == "local" else f"hf cache: {location.hf_id}"
    for split in check.splits:
        row[split.label] = split.used
        row[f"{split.label}_available"] = split.available
        row[f"{split.label}_bad"] = len(split.bad) if split.available else None
        if split.label == "test" and split.prompt:
            row["prompt"] = split.prompt
    if check.problems:
        row.update(status="error", problem="; ".join(p.problem for p in check.problems),
                   fix="; ".join(dict.fromkeys(p.fix for p in check.problems)))
    elif any(split.skipped for split in check.splits):
        row["problem"] = "; ".join(f"{split.label} {split.skipped}" for split in check.splits if split.skipped)
        row["fix"] = ("those items are skipped (never trained on or scored); repair or re-download them, "
                      "or raise faults.max_bad_data_fraction if the preflight stops on them")
    return row


_STYLE = {"found": "green", "synthetic": "cyan", "missing": "red", "error": "red"}


def _count(used: int | None, available: int | None, bad: int | None = None) -> str:
    if used is None:
        return "-"
    text = f"{used}" if available is None else f"{used} of {available}"
    return f"{text}, {bad} bad" if bad else text


def render_data_check(rows: list[dict], console: Console) -> None:
    """Print the rows of `data_check` as a table, then each problem with its fix."""
    table = Table(title="data check", show_lines=True)
    for column in ("name", "type", "status", "source", "train", "test", "prompt"):
        table.add_column(column, overflow="fold")
    for row in rows:
        prompt = row["prompt"] or ""
        lines = prompt.splitlines()
        short = "\n".join(lines[:4]) + ("\n…" if len(lines) > 4 else "")
        table.add_row(
            escape(row["name"]),
            escape(row["type"]),
            f"[{_STYLE[row['status']]}]{row['status']}[/]",
            escape(row["source"]),
            _count(row["train"], row["train_available"], row.get("train_bad")),
            _count(row["test"], row["test_available"], row.get("test_bad")),
            escape(short),
        )
    console.print(table)
    for row in rows:
        if row["problem"]:
            console.print(
                f"[red]{row['key']}[/] ({escape(row['name'])}): {escape(row['problem'])}", highlight=False
            )
            if row["fix"]:
                console.print(f"  to fix: {escape(row['fix'])}", highlight=False)
