"""Units of work: planning (recipe, seed, arm) units, plain `lite-cpt run --arm` processes
sharing one run directory, and Ray staying out of every module but the Ray backend."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lite_cpt.errors import UserError
from lite_cpt.recipe import recipe_from_dict
from lite_cpt.run.units import plan_units, run_groups, seed_groups
from tests.helpers import tiny_recipe, write_recipe

ROOT = Path(__file__).resolve().parents[1]
ARMS = [{"name": "sft", "lr": 5e-3, "batch_size": 8}, {"name": "multitask_sft", "lr": 5e-3, "batch_size": 8}]


def test_units_cover_every_recipe_seed_and_arm(tmp_path):
    first = recipe_from_dict(tiny_recipe(tmp_path, arms=ARMS, name="a", seeds=[0, 3]))
    second = recipe_from_dict(tiny_recipe(tmp_path, arms=ARMS, name="b"))
    units = plan_units([first, second], arms=["sft"])
    assert [u.label for u in units] == ["a/seed 0/sft", "a/seed 3/sft", "b/seed 0/sft"]
    assert units[1].recipe.seed == 3 and units[1].arm_dir == tmp_path / "runs" / "a" / "seed_3" / "sft"
    # Every unit carries all of its sweep's seeds, which the run directory's recipe.yaml lists.
    assert [u.recipe.seeds for u in units] == [[0, 3], [0, 3], [0]]
    assert [len(group) for group in seed_groups(plan_units([first]))] == [2, 2]
    assert [len(group) for group in run_groups(plan_units([first, second]))] == [4, 2]
    # `lite-cpt run --seed K`: only that seed; a recipe's seed list gains it, a recipe without one
    # lists just the picked seed.
    assert [(u.seed, u.arm, u.recipe.seeds) for u in plan_units([first], seeds=[5])] == [
        (5, "sft", [0, 3, 5]), (5, "multitask_sft", [0, 3, 5])]
    assert [(u.seed, u.recipe.seeds) for u in plan_units([second], arms=["sft"], seeds=[2])] == [(2, [2])]


def test_units_refuse_an_unknown_arm_and_two_recipes_with_one_run_dir(tmp_path):
    recipe = recipe_from_dict(tiny_recipe(tmp_path, arms=ARMS, name="a"))
    with pytest.raises(UserError, match="arm 'rft' is not in recipe a; its arms are: sft, multitask_sft"):
        plan_units([recipe], arms=["rft"])
    with pytest.raises(UserError, match="two recipes of the sweep write to"):
        plan_units([recipe, recipe])


def test_ray_is_imported_only_by_the_ray_backend():
    importing = [path.relative_to(ROOT).as_posix() for path in (ROOT / "lite_cpt").rglob("*.py")
                 if re.search(r"^\s*(import ray\b|from ray\b)", path.read_text(encoding="utf-8"), re.M)]
    assert importing == ["lite_cpt/run/ray_backend.py"]
    # Loading the CLI and the unit machinery (and running a command) leaves Ray unimported.
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom lite_cpt.cli import app\n"
            "import lite_cpt.run.units, lite_cpt.run.continual, lite_cpt.bench.ray\n"
            "assert CliRunner().invoke(app, ['sweep', '--help']).exit_code == 0\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _launch(recipe_path: Path, env: dict) -> subprocess.Popen:
    command = [sys.executable, "-m", "lite_cpt.cli", "run", str(recipe_path), "--arm", "sft"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_run_arm_processes_never_train_the_same_unit(tmp_path):
    raw = tiny_recipe(tmp_path, arms=ARMS, tasks=("mini_clevr", "mini_geometry"), name="shared")
    path = write_recipe(tmp_path / "shared.yaml", raw)
    # A cache of their own, so the two processes also race to build the tiny base.
    env = {**os.environ, "LITE_CPT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    first, second = _launch(path, env), _launch(path, env)
    outputs = [process.communicate(timeout=600)[0] for process in (first, second)]
    codes = sorted(process.returncode for process in (first, second))

    trained = [out for out in outputs if "sft · geometry" in out]
    assert len(trained) == 1, outputs
    other = next(out for out in outputs if out is not trained[0])
    # The other one was refused by the unit's lock, or found the unit finished.
    assert "is being trained by process" in other or "finished earlier" in other, other
    assert codes in ([0, 0], [0, 1]), outputs
    assert sum("building the tiny base" in out for out in outputs) == 1, outputs
    run_dir = tmp_path / "runs" / "shared"
    arm_dir = run_dir / "seed_0" / "sft"
    task_ends = [json.loads(line)["task_index"] for line in (arm_dir / "metrics.jsonl").read_text().splitlines()
                 if '"task_end"' in line]
    assert task_ends == [1, 2]
    assert len(json.loads((arm_dir / "matrix.json").read_text())["R"]) == 3
    assert not (run_dir / "seed_0" / "multitask_sft").exists()
    # `lite-cpt report` assembles what has finished: the one arm.
    report = subprocess.run([sys.executable, "-m", "lite_cpt.cli", "report", str(run_dir)], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "sft" in (run_dir / "report.md").read_text()


def test_a_local_cluster_gets_the_loopback_switch_before_ray_is_imported():
    # `lite-cpt run --ray` in a fresh process: Ray must read RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    # when it is first imported, or it binds every interface (connect is stubbed: no cluster).
    code = ("from lite_cpt.run import ray_backend\n"
            "def connect(address, workers=None):\n"
            "    import ray._private.ray_constants as constants\n"
            "    print('every interface' if constants.ENABLE_RAY_CLUSTER else 'loopback')\n"
            "    raise SystemExit(0)\n"
            "ray_backend.connect = connect\n"
            "ray_backend.run_on_ray([])\n")
    env = {k: v for k, v in os.environ.items() if k not in ray_backend_env_keys()}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "loopback"


def ray_backend_env_keys() -> tuple[str, ...]:
    from lite_cpt.run.ray_backend import LOCAL_CLUSTER_ENV

    return tuple(LOCAL_CLUSTER_ENV)


def test_a_damaged_base_row_is_named_and_computed_again_by_the_base_task(tmp_path, caplog):
    """The base task of a sweep (compute_base_row) skips a saved row 0 but not a damaged one: it
    is named in the log and computed again, so the units read a whole row."""
    from lite_cpt.run.units import compute_base_row

    [unit] = plan_units([recipe_from_dict(tiny_recipe(tmp_path, arms=ARMS[:1], tasks=("mini_clevr",), name="b"))])
    seed_dir = compute_base_row(unit)
    saved = (seed_dir / "base_scores.json").read_text()
    (seed_dir / "base_scores.json").write_text(saved[: len(saved) // 2])
    caplog.set_level("WARNING")
    assert compute_base_row(unit) == seed_dir
    ours = lambda: [r.getMessage() for r in caplog.records if r.name.startswith("lite_cpt.")]  # noqa: E731
    [said] = ours()  # the size and checksum found vs those recorded when it was written
    assert said.startswith(f"{seed_dir / 'base_scores.json'} was truncated after it was written: ")
    assert said.endswith("; what it held is computed again")
    assert (seed_dir / "base_scores.json").read_text() == saved
    caplog.clear()
    compute_base_row(unit)  # whole again: read, not computed
    assert ours() == []
