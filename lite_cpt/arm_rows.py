"""An arm's score rows on disk: matrix.json (the resume marker) and general.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lite_cpt.io import atomic_write_json


@dataclass
class RowFiles:
    """An arm's matrix.json and general.json; a chain-of-thought evaluation is marked in
    matrix.json (`eval_prompt: cot`), so its row 0 is read from the base files of that format."""

    matrix_path: Path
    general_path: Path
    tasks: list[str]
    benches: list[str]
    joint: bool
    cot: bool

    def write(self, rows: list, general_rows: list) -> None:
        # general.json first: matrix.json is the resume marker and must be the last file written.
        atomic_write_json(self.general_path, {"benchmarks": self.benches, "G": general_rows})
        matrix = {"tasks": self.tasks, "R": rows}
        if self.joint:
            matrix["joint"] = True
        if self.cot:
            matrix["eval_prompt"] = "cot"
        atomic_write_json(self.matrix_path, matrix)
