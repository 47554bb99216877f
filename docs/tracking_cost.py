"""What the trackers cost (docs/tracking.md): 2 seeds x 2 arms in one process, all three
trackers on, each unit 20 step records and 2 task ends, no model. Prints the imports, each
unit's open + close (the first pays what a process pays once) and the mean per record.

    python docs/tracking_cost.py [OTHER_CHECKOUT]   # OTHER_CHECKOUT: measure its lite_cpt instead
"""

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if len(sys.argv) > 1:
    sys.path.insert(0, sys.argv[1])
STARTED = time.perf_counter()

import lite_cpt  # noqa: E402
from lite_cpt.io import append_jsonl  # noqa: E402
from lite_cpt.recipe import recipe_from_dict  # noqa: E402
from lite_cpt.tracking.tracker import RunTracker  # noqa: E402
from tests.helpers import tiny_recipe  # noqa: E402

TASKS = ["clevr", "geometry"]
STEP = {"event": "step", "loss": 0.5, "reward_mean": 0.5, "kl": 0.01, "entropy": 1.0, "clip_fraction": 0.0,
        "generated_tokens": 100, "trained_tokens": 90, "seconds": 0.1}


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def one_unit(tracker: RunTracker, run_dir: Path, seed: int, arm: str) -> tuple[float, list[float]]:
    """(seconds to open and close the unit, seconds per record)."""
    arm_dir = run_dir / f"seed_{seed}" / arm
    arm_dir.mkdir(parents=True)
    (arm_dir / "matrix.json").write_text(json.dumps({"tasks": TASKS, "R": [[0.5, 0.25]]}))
    (arm_dir / "general.json").write_text(json.dumps({"benchmarks": ["pope"], "G": [[0.5]]}))
    metrics, opened, records = arm_dir / "metrics.jsonl", 0.0, []
    for index, task in enumerate(TASKS, 1):
        for step in range(10):
            record = {**STEP, "task_index": index, "step": step + 1}
            append_jsonl(metrics, record)
            seconds = timed(lambda: tracker.log(arm, record, metrics))
            if (index, step) == (1, 0):
                opened += seconds
            else:
                records.append(seconds)
        record = {"event": "task_end", "task_index": index, "task": task, "train_seconds": 1.0,
                  "eval_seconds": 0.5, "scores": [0.5, 0.5], "general": [0.5]}
        append_jsonl(metrics, record)
        records.append(timed(lambda: tracker.log(arm, record, metrics)))
    if hasattr(tracker, "finish"):  # older versions closed every unit at the end only
        opened += timed(lambda: tracker.finish(arm))
    return opened, records


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    try:
        recipe = recipe_from_dict(tiny_recipe(tmp, tasks=("mini_clevr", "mini_geometry"),
                                              logging={"tensorboard": True, "wandb": True, "mlflow": True}))
        run_dir = recipe.run_dir
        run_dir.mkdir(parents=True)
        (run_dir / "recipe.yaml").write_text("name: t\n")
        opens, records = [], []
        for seed in (0, 1):
            tracker = RunTracker(recipe, run_dir, seed)
            for arm in ("sft", "rft"):
                opened, logged = one_unit(tracker, run_dir, seed, arm)
                opens.append(opened)
                records += logged
            opens[-1] += timed(tracker.close)
        imports = time.perf_counter() - STARTED - sum(opens) - sum(records)
        print(f"package {Path(lite_cpt.__file__).parent}: imports and setup {imports:.2f} s; "
              f"unit open + close {' '.join(f'{s:.2f}' for s in opens)} s; "
              f"per record {1000 * sum(records) / len(records):.1f} ms ({len(records)} records)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
