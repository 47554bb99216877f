"""What a metrics.jsonl record becomes in the trackers: named scalars on two step axes.

The keys are listed in docs/tracking.md; `lite_cpt.tracking.tracker` sends them, one backend per
tracker (`lite_cpt.tracking.backends`) stores them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: Fields of a record that say where it belongs rather than what it measured.
_BOOKKEEPING = {"event", "task_index", "task", "step", "scores", "general"}


@dataclass(frozen=True)
class Entry:
    """One record as the trackers receive it."""

    train_step: int  # TensorBoard and MLflow step: training steps so far (0: the base row)
    index: int  # W&B step: 0 the base row, i the i-th line of metrics.jsonl
    scalars: dict[str, float]


@dataclass
class Unit:
    """One (seed, arm): what its tracker runs are called and where they write."""

    recipe: object
    run_dir: Path
    seed: int
    arm: str
    state: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.recipe.name}/seed_{self.seed}/{self.arm}"

    @property
    def arm_dir(self) -> Path:
        return self.run_dir / f"seed_{self.seed}" / self.arm


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def row_scalars(label: str, scores: list | None, general: list | None, tasks: list[str],
                benches: list[str], seen: list[str]) -> dict[str, float]:
    """A matrix row as cells (`matrix/after_<label>/<task>`) and curve points (`accuracy/<task>`),
    with the mean over the tasks trained so far, and its general-benchmark scores alike."""
    out: dict[str, float] = {}
    cells = {name: float(v) for name, v in zip(tasks, scores or []) if _number(v)}
    for name, value in cells.items():
        out[f"matrix/after_{label}/{name}"] = out[f"accuracy/{name}"] = value
    if seen and all(name in cells for name in seen):
        out[f"matrix/after_{label}/seen_mean"] = out["accuracy/seen_mean"] = sum(cells[n] for n in seen) / len(seen)
    for name, value in zip(benches, general or []):
        if _number(value):
            out[f"general/after_{label}/{name}"] = out[f"general/{name}"] = float(value)
    return out


def scalars_of(record: dict, tasks: list[str], benches: list[str]) -> dict[str, float]:
    """The scalars of one metrics.jsonl record (a training step or a task end)."""
    if record.get("event") != "task_end":
        return {f"train/{key}": float(value) for key, value in record.items()
                if key not in _BOOKKEEPING and _number(value)}
    index, phase = int(record.get("task_index", 0)), str(record.get("task"))
    seen = tasks[:index] if phase in tasks else tasks  # a joint arm's one phase saw every task
    out = {"task": float(index), **row_scalars(phase, record.get("scores"), record.get("general"),
                                               tasks, benches, seen)}
    for key, value in record.items():
        if key in _BOOKKEEPING:
            continue
        if key == "phase_seconds" and isinstance(value, dict):
            out.update({f"seconds/{k}": float(v) for k, v in value.items() if _number(v)})
        elif key == "predicted_seconds" and isinstance(value, dict):
            out.update({f"seconds/predicted/{k}": float(v) for k, v in value.items() if _number(v)})
        elif key.endswith("_seconds") and _number(value):
            out[f"seconds/{key.removesuffix('_seconds')}"] = float(value)
        elif _number(value):
            out[f"task_end/{key}"] = float(value)
        elif isinstance(value, dict):
            out.update({f"task_end/{key}/{k}": float(v) for k, v in value.items() if _number(v)})
    return out
