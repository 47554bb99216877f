"""Whether an arm's saved scores are the ones its per-item predictions give.

Every score of matrix.json (R) and general.json (G) is the mean of the item scores saved in the
row's predictions file (`lite_cpt.results.predictions`), computed by the same function. `report` and
`compare` recompute each row from its predictions and name every cell that disagrees, beside
any result file that no longer matches its checksum (`lite_cpt.run.artefacts`); `run` evaluates a
row again when its predictions file is damaged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lite_cpt.run.artefacts import artefact_problem
from lite_cpt.errors import UserError
from lite_cpt.run.evaluate import mean_score
from lite_cpt.results.predictions import read_predictions, row_predictions_path
from lite_cpt.run.eval_prompt import base_files

log = logging.getLogger(__name__)

#: scores are means of the same floats in the same order: equal up to rounding in the last bit
TOLERANCE = 1e-9


def row_paths(arm_dir: Path, rows: int) -> list[Path]:
    """The predictions file of each row: the seed's base row in the prompt format the arm is
    evaluated with (matrix.json's `eval_prompt`), then the arm's own."""
    base = base_files(_evaluated_with_cot(Path(arm_dir)))[1]
    return [Path(arm_dir).parent / base, *(row_predictions_path(arm_dir, i) for i in range(1, rows))]


def _evaluated_with_cot(arm_dir: Path) -> bool:
    try:
        return json.loads((arm_dir / "matrix.json").read_text(encoding="utf-8")).get("eval_prompt") == "cot"
    except (OSError, ValueError, AttributeError):  # absent or damaged: named by the checks that read it
        return False


def _disagreements(source: Path, label: str, names: list[str], rows: list[list[float]],
                   paths: list[Path]) -> list[str]:
    found = []
    for i, (row, path) in enumerate(zip(rows, paths)):
        if not path.is_file() or artefact_problem(path):
            continue  # no predictions to compare with (an older run), or named as damaged
        try:
            items = read_predictions(path)
        except UserError as error:
            found.append(str(error))
            continue
        for name, saved in zip(names, row):
            if name in items and abs(mean_score(items[name]) - float(saved)) > TOLERANCE:
                found.append(f"{source} row {i}, {label} {name}: {float(saved):.4f} there, but "
                             f"{mean_score(items[name]):.4f} from the {len(items[name])} predictions in {path}")
    return found


def unit_problems(arm_dir: Path, tasks: list[str], R: list[list[float]], benchmarks: list[str],
                  G: list[list[float]]) -> list[str]:
    """Every damaged result file of the arm (checksum) and every score of matrix.json or
    general.json that its row's predictions do not give; each is named in the log too."""
    arm_dir = Path(arm_dir)
    paths = row_paths(arm_dir, max(len(R), len(G)))
    checked = [arm_dir / "matrix.json", arm_dir / "general.json", *paths]
    problems = [problem for path in checked if (problem := artefact_problem(path))]
    problems += _disagreements(arm_dir / "matrix.json", "task", tasks, R, paths)
    problems += _disagreements(arm_dir / "general.json", "benchmark", benchmarks, G, paths)
    for problem in problems:
        log.warning("%s", problem)
    return problems


def damaged_prediction_rows(arm_dir: Path, rows: int) -> list[int]:
    """Rows 1..rows-1 whose predictions file no longer matches its checksum (named in the log)."""
    damaged = []
    for i, path in enumerate(row_paths(arm_dir, rows)[1:], 1):
        if problem := artefact_problem(path):
            log.warning("%s; row %d is evaluated again with %s", problem, i, Path(arm_dir) / f"task_{i}")
            damaged.append(i)
    return damaged
