"""`lite-cpt bench ray`: wall time of a recipe's arms run serially vs as Ray units, side by side.

Both runs start from the same cached tiny base (built before either clock starts), compute
their base row once, train every arm and write the report, into two fresh run directories
below `out_dir`; the Ray time includes starting the local cluster. The machine's load average
is recorded before and after, since other work on a shared machine moves both numbers.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lite_cpt.recipe import Recipe


def _renamed(recipe: Recipe, out_dir: Path, suffix: str) -> Recipe:
    return recipe.model_copy(update={"name": f"{recipe.name}-{suffix}", "output_dir": str(out_dir)})


def _matrices(recipe: Recipe) -> list[dict]:
    """Every (seed, arm) matrix of a finished run, in order."""
    return [json.loads((recipe.run_dir / f"seed_{seed}" / arm.name / "matrix.json").read_text())
            for seed in recipe.run_seeds for arm in recipe.arms]


def bench_ray(recipe: Recipe, out_dir: Path, workers: int = 2, console=None) -> dict:
    """Run the recipe's arms serially, then on a local `workers`-slot Ray cluster; returns the
    wall times, their ratio, the ideal ratio, the load averages and whether the matrices agree."""
    from lite_cpt.run.ray_backend import keep_local_cluster_on_loopback, run_on_ray

    # First: libraries loaded by the serial run may import Ray, which reads this switch then.
    keep_local_cluster_on_loopback()
    from lite_cpt.run.continual import run_recipe
    from lite_cpt.models import load_base
    from lite_cpt.run.units import plan_units

    out_dir = Path(out_dir)
    serial, parallel = _renamed(recipe, out_dir, "serial"), _renamed(recipe, out_dir, "ray")
    for existing in (serial.run_dir, parallel.run_dir):
        if existing.exists():
            from lite_cpt.errors import UserError

            raise UserError(f"{existing} exists; give the benchmark an empty --out directory")
    load_base(recipe, console=console)  # builds and caches the tiny base outside both clocks
    load_before = os.getloadavg()
    started = time.perf_counter()
    run_recipe(serial, console=console)
    serial_seconds = time.perf_counter() - started
    started = time.perf_counter()
    outcomes = run_on_ray(plan_units([parallel]), workers=workers)
    ray_seconds = time.perf_counter() - started
    return {
        "recipe": recipe.name, "units": len(outcomes), "workers": workers, "cpu_count": os.cpu_count(),
        "serial_seconds": round(serial_seconds, 1), "ray_seconds": round(ray_seconds, 1),
        "speedup": round(serial_seconds / ray_seconds, 2), "ideal_speedup": float(min(workers, len(outcomes))),
        "all_units_ok": all(outcome.ok for outcome in outcomes),
        "same_matrices": _matrices(serial) == _matrices(parallel),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
    }
