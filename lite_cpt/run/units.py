"""Units of work: one (recipe, seed, arm) trained alone, into the run directory it shares.

A sweep over recipes, seeds and arms is a list of units. Every unit is independent once its
run's base row (row 0) exists, so units can run one after another in one process, as separate
`lite-cpt run --arm` processes under any scheduler (a Slurm array), or as Ray tasks
(lite_cpt.run.ray_backend). Each unit resumes from what its arm directory already holds and runs
under the arm's lock, so two workers never train the same unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lite_cpt.errors import UserError
from lite_cpt.recipe import Recipe, load_recipe


@dataclass(frozen=True)
class Unit:
    """One arm of one recipe under one seed: `recipe.seed` is the unit's seed and `recipe.seeds`
    every seed of its sweep (the run directory's saved recipe lists them all)."""

    recipe: Recipe
    arm: str

    @property
    def seed(self) -> int:
        return self.recipe.seed

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir

    @property
    def seed_dir(self) -> Path:
        return self.recipe.run_dir / f"seed_{self.recipe.seed}"  # the layout of lite_cpt.run.continual

    @property
    def arm_dir(self) -> Path:
        return self.seed_dir / self.arm

    @property
    def label(self) -> str:
        return f"{self.recipe.name}/seed {self.seed}/{self.arm}"


def select_arms(recipe: Recipe, arms: list[str] | None) -> list[str]:
    """The arm names to run (all of the recipe's when `arms` is empty), checked against it."""
    known = [arm.name for arm in recipe.arms]
    if not arms:
        return known
    unknown = [name for name in arms if name not in known]
    if unknown:
        raise UserError(f"arm {', '.join(map(repr, unknown))} is not in recipe {recipe.name}; "
                        f"its arms are: {', '.join(known)}")
    return list(dict.fromkeys(arms))


def plan_units(recipes: list[Recipe], arms: list[str] | None = None, seeds: list[int] | None = None) -> list[Unit]:
    """Every (recipe, seed, arm) unit, seed-major within a recipe: each recipe's seeds (`seeds`,
    or just `seed`) unless `seeds` picks others, and its arms unless `arms` picks some."""
    _check_distinct_run_dirs(recipes)
    units = []
    for recipe in recipes:
        names = select_arms(recipe, arms)
        listed = _listed_seeds(recipe, seeds)
        for seed in seeds or recipe.run_seeds:
            variant = recipe.model_copy(update={"seed": seed, "seeds": listed})
            units += [Unit(variant, name) for name in names]
    return units


def _listed_seeds(recipe: Recipe, picked: list[int] | None) -> list[int]:
    """The seeds a unit's recipe lists (saved in the run's recipe.yaml): the recipe's `seeds`
    plus any picked one; a recipe without a `seeds` list lists just the picked seeds. Units
    of one recipe list the same seeds, so processes saving recipe.yaml at once agree."""
    if not picked:
        return recipe.run_seeds
    if recipe.seeds is None:
        return list(picked)
    return list(dict.fromkeys([*recipe.seeds, *picked]))


def load_units(paths: list[Path], overrides: list[str], arms: list[str] | None = None) -> list[Unit]:
    """Units of recipe files, the same overrides applied to each."""
    return plan_units([load_recipe(path, overrides) for path in paths], arms)


def _check_distinct_run_dirs(recipes: list[Recipe]) -> None:
    seen: dict[Path, str] = {}
    for recipe in recipes:
        run_dir = recipe.run_dir.resolve()
        if run_dir in seen:
            raise UserError(f"two recipes of the sweep write to {recipe.run_dir} (both are named "
                            f"'{recipe.name}'); give one another name, e.g. --set name=...")
        seen[run_dir] = recipe.name


def seed_groups(units: list[Unit]) -> list[list[Unit]]:
    """Units grouped by (run directory, seed): the units sharing one base row, in order."""
    groups: dict[tuple[Path, int], list[Unit]] = {}
    for unit in units:
        groups.setdefault((unit.run_dir, unit.seed), []).append(unit)
    return list(groups.values())


def run_groups(units: list[Unit]) -> list[list[Unit]]:
    """Units grouped by run directory (one recipe, all its seeds): one report each, in order."""
    groups: dict[Path, list[Unit]] = {}
    for unit in units:
        groups.setdefault(unit.run_dir, []).append(unit)
    return list(groups.values())


def unit_finished(unit: Unit) -> bool:
    """Whether the unit's arm has every row of its matrix (read from the run directory)."""
    from lite_cpt.run.continual import arm_finished

    return arm_finished(unit.recipe, unit.arm)


def run_units(units: list[Unit], console=None) -> list[Path]:
    """Run units one after another in this process, one workspace per recipe (the base model
    is loaded once and reused across seeds); returns the run directories, reports written."""
    from lite_cpt.run.continual import run_recipe

    run_dirs = []
    for group in run_groups(units):
        arms = list(dict.fromkeys(unit.arm for unit in group))
        run_dirs.append(run_recipe(group[0].recipe, console=console, arms=arms))
    return run_dirs


def run_unit(unit: Unit, console=None, calibration=None) -> Path:
    """Train one unit to its end (resuming what its arm directory holds); no report.
    `calibration`: the throughputs behind the time plan its metrics log."""
    from lite_cpt.run.continual import run_seed_arms

    run_seed_arms(unit.recipe, [unit.arm], console=console, calibration=calibration)
    return unit.arm_dir


def compute_base_row(unit: Unit, console=None) -> Path:
    """Row 0 of the unit's seed (base model on every task and benchmark), written once."""
    from lite_cpt.run.continual import ensure_base_row

    return ensure_base_row(unit.recipe, console=console)
