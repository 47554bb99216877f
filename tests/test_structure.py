"""The package's shape stays as the README describes it: packages that show the pipeline around a
small root, no import cycle among its modules, no function over 60 lines or 8 parameters outside
the kernels, one registration style for arms, task types and families (each plugin declaring its
recipe settings beside its code), and no runtime dependency that nothing uses."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

import lite_cpt
from lite_cpt.arms import ARMS, KINDS, arm_names
from lite_cpt.arms.base import ArmMethod
from lite_cpt.families import FAMILIES
from lite_cpt.registry import Registry
from lite_cpt.tasks import BENCHMARK_TYPES, TASK_TYPES, Task
from lite_cpt.train.phase import PHASES

#: The plugin packages and their registries: one mechanism (lite_cpt/registry.py) for all three.
PLUGIN_PACKAGES = {"arms": (ARMS,), "tasks": (TASK_TYPES, BENCHMARK_TYPES), "families": (FAMILIES,)}

PACKAGE = Path(lite_cpt.__file__).parent
MAX_LINES = 60
MAX_PARAMETERS = 8


def package_modules() -> dict[str, Path]:
    """Dotted name -> file of every module under lite_cpt/, the kernels included."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(["lite_cpt", *parts])] = path
    return modules


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The lite_cpt modules `path` imports anywhere: function-level imports and those under
    `if TYPE_CHECKING:` too (a type hint is a dependency as well; a circle through one is still
    a circle between the modules' ideas)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import module`
    return {m for m in found if m in known and m != name}


def _discovering_packages(modules: dict[str, Path]) -> set[str]:
    """The packages whose `__init__` calls `discover(__name__)` (lite_cpt/registry.py)."""
    found = set()
    for name, path in modules.items():
        if path.name == "__init__.py":
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "discover":
                    found.add(name)
    return found


def _implementations(path: Path, known: set[str]) -> set[str]:
    """The modules an arm declaration in `path` names as its implementation ("module:Class"),
    imported when a run builds the arm."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.keyword) and node.arg == "implementation" and isinstance(node.value, ast.Constant):
            found.add(str(node.value.value).partition(":")[0])
    return found & known


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    graph = {name: imported_modules(path, name, set(modules)) for name, path in modules.items()}
    # A plugin package imports every module directly inside it by walking its folder (so that
    # adding a plugin is adding a module), and an arm declaration imports its training code
    # by name when a run builds the arm: those imports are edges too.
    for package in _discovering_packages(modules):
        depth = package.count(".") + 1
        graph[package] |= {m for m in modules if m.startswith(package + ".") and m.count(".") == depth}
    for name, path in modules.items():
        graph[name] |= _implementations(path, set(modules))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_import_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "lite_cpt.tasks.scorers" in graph["lite_cpt.tasks.custom_settings"]  # a function-level import
    assert "lite_cpt.recipe_run" in graph["lite_cpt.train.rft"]  # only under TYPE_CHECKING
    assert "lite_cpt.tasks.mini" in graph["lite_cpt.tasks"]  # discovered
    assert {"lite_cpt.arms.rl", "lite_cpt.arms.sft"} <= graph["lite_cpt.arms"]
    assert "lite_cpt.arms.rl.method" not in graph["lite_cpt.arms"]  # discovery imports one level
    assert "lite_cpt.arms.rl.method" in graph["lite_cpt.arms.rl"]  # the declaration's implementation


def test_no_import_cycle_among_the_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _plugin_settings() -> set[type]:
    """Every settings model the plugins declare, and the sections inside them."""
    from pydantic import BaseModel

    from lite_cpt.recipe import _section_type

    found: set[type] = set()
    pending = [arm.settings for arm in ARMS.values()]
    pending += [cls.settings for registry in (TASK_TYPES, BENCHMARK_TYPES) for cls in registry.values()]
    while pending:
        model = pending.pop()
        if model is None or model in found:
            continue
        found.add(model)
        for field in model.model_fields.values():
            section = _section_type(field.annotation)
            if isinstance(section, type) and issubclass(section, BaseModel):
                pending.append(section)
    return found


def test_the_recipe_defines_and_re_exports_no_plugin_settings():
    """Each arm method and task type declares its settings beside its code; the recipe modules
    neither define nor re-export them (nor any section: import each from its defining module)."""
    import lite_cpt.recipe as recipe

    settings = _plugin_settings()
    assert {s.__name__ for s in settings} >= {"RFTConfig", "RIFConfig", "ReplayConfig", "EWCConfig",
                                              "CustomTaskConfig", "CustomColumns"}
    for model in settings:
        assert not model.__module__.startswith("lite_cpt.recipe"), model
        assert model.__module__.startswith(("lite_cpt.arms.", "lite_cpt.tasks.")), model
        assert all(value is not model for value in vars(recipe).values()), f"lite_cpt.recipe holds {model.__name__}"
    assert not hasattr(recipe, "__all__")


def test_each_plugin_package_discovers_its_modules_the_one_way():
    """arms/, tasks/ and families/ each call `discover(__name__)` and import none of their
    plugin modules by name (no list to keep up to date)."""
    modules = package_modules()
    assert _discovering_packages(modules) == {f"lite_cpt.{package}" for package in PLUGIN_PACKAGES}
    for package in PLUGIN_PACKAGES:
        init = PACKAGE / package / "__init__.py"
        named = imported_modules(init, f"lite_cpt.{package}", set(modules))
        plugins = {m for m in named if m.startswith(f"lite_cpt.{package}.") and not m.endswith(".base")}
        assert plugins == set(), f"lite_cpt/{package}/__init__.py imports plugin modules by name: {sorted(plugins)}"


def _registered_through(path: Path, registries: set[str]) -> set[str]:
    """The registries a module registers with: `REGISTRY.register(...)` calls and decorators."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        target = node.func if isinstance(node, ast.Call) else node
        if isinstance(target, ast.Attribute) and target.attr == "register" and getattr(target.value, "id", None):
            found.add(target.value.id)
    return found & registries


def test_every_plugin_registers_through_the_one_registry_mechanism():
    registries = {"ARMS", "TASK_TYPES", "BENCHMARK_TYPES", "FAMILIES"}
    for package, held in PLUGIN_PACKAGES.items():
        assert all(isinstance(registry, Registry) for registry in held), package
    # No second mechanism is left: the old decorators and the family tuple are gone.
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\bdef register_\w+|\bregister_(arm|task)\b|^FAMILY = ", text, re.M), path
    # Every task class that names a type is registered, by its own module.
    named = {cls for cls in _subclasses(Task) if "type_name" in vars(cls)}
    assert named == set(TASK_TYPES.values()) | set(BENCHMARK_TYPES.values())
    for cls in named:
        assert cls.__module__.startswith("lite_cpt.tasks."), cls
        assert _registered_through(Path(sys.modules[cls.__module__].__file__), registries), cls
    # Every arm declaration and family is made inside a `.register(...)` call of its package.
    for package, constructor in (("arms", "ArmDeclaration"), ("families", "Family")):
        for path in (PACKAGE / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            registered = {id(node.args[0]) for node in ast.walk(tree) if isinstance(node, ast.Call)
                          and isinstance(node.func, ast.Attribute) and node.func.attr == "register" and node.args}
            made = [node for node in ast.walk(tree)
                    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == constructor]
            assert all(id(node) in registered for node in made), path
    assert {family.name for family in FAMILIES.values()} == set(FAMILIES) >= {"qwen2_5_vl", "qwen3_vl", "text"}


MAX_MODULE_LINES = 500

def test_no_module_over_500_lines():
    sizes = {path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
             for path in PACKAGE.rglob("*.py")}
    over = {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert over == {}, f"split these modules (at most {MAX_MODULE_LINES} lines each): {over}"


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def _parameter_count(fn: ast.FunctionDef) -> int:
    args = fn.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return len([n for n in names if n not in ("self", "cls")])


def test_no_function_over_60_lines_or_8_parameters_outside_the_kernels():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("kernels/"):  # a Triton kernel is one long function by nature
            continue
        for fn in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_LINES:
                problems.append(f"{relative}:{fn.lineno} {fn.name}: {lines} lines")
            if _parameter_count(fn) > MAX_PARAMETERS:
                problems.append(f"{relative}:{fn.lineno} {fn.name}: {_parameter_count(fn)} parameters")
    assert not problems, "\n".join(problems)


#: Below the run loop: what trains, evaluates, checkpoints and logs one (seed, arm). These take
#: the unit's resolved plan (lite_cpt.run.unit_plan), never the whole recipe.
BELOW_THE_LOOP = ("train/", "arms/", "run/checkpoint.py", "run/rows.py", "run/saved_rows.py", "run/evaluate.py",
                  "run/workspace.py", "run/splits.py", "run/run_time_plan.py", "run/preemption.py", "run/locks.py",
                  "run/integrity.py", "run/artefacts.py", "run/continual.py")
#: The functions of those modules that sit above the loop and so may read the recipe: the top of
#: the continual loop (it resolves the plans) and the `lite-cpt eval` command's evaluation sets.
ABOVE_THE_LOOP = {
    "run/continual.py": {"prepare_run_dir", "build_workspace", "run_recipe", "run_seed_arms", "lock_ahead",
                         "_finished_quietly", "arm_finished", "ensure_base_row", "_run_arms", "_seedless"},
    "run/evaluate.py": {"recipe_eval_sets", "evaluate_adapter"},
}


def recipe_readers(source: str, allowed: set[str] = frozenset()) -> list[str]:
    """Functions of `source` (outside `allowed`) that take a parameter named `recipe` or
    annotated `Recipe`, or read a `.recipe` attribute (a workspace's, a unit's ...)."""
    found = []
    for fn in _functions(ast.parse(source)):
        if fn.name in allowed:
            continue
        args = fn.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs):
            annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if arg.arg == "recipe" or re.search(r"\bRecipe\b", annotation):
                found.append(f"{fn.name}:{fn.lineno} takes {arg.arg}: {annotation or 'recipe'}")
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute) and node.attr == "recipe":
                found.append(f"{fn.name}:{node.lineno} reads {ast.unparse(node)}")
    return found


def test_the_recipe_reader_check_sees_each_way_in():
    source = ("def a(recipe): pass\ndef b(cfg: 'Recipe'): pass\ndef c(ws):\n    return ws.recipe.seed\n"
              "def d(ws, plan: UnitPlan):\n    return plan.knobs\n")
    assert [line.split(":")[0] for line in recipe_readers(source)] == ["a", "b", "c"]
    assert recipe_readers(source, {"a", "b", "c"}) == []


def test_no_function_below_the_run_loop_takes_the_recipe():
    """The loop resolves each (seed, arm) once (lite_cpt.run.unit_plan.plan_unit) and hands the
    plan down: a function below it that took the recipe could re-derive a value its own way."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith(BELOW_THE_LOOP):
            allowed = ABOVE_THE_LOOP.get(relative, set())
            problems += [f"{relative} {p}" for p in recipe_readers(path.read_text(encoding="utf-8"), allowed)]
    assert not problems, "\n".join(problems)


def test_every_arm_is_declared_once_with_a_complete_declaration_and_its_training_code():
    implementations = {name: arm.method_class() for name, arm in ARMS.items()}
    assert set(ARMS) == set(arm_names()) >= {"sft", "multitask_sft", "rft", "multitask_rft", "rif_rft", "replay", "ewc"}
    for name, arm in ARMS.items():
        assert arm.kind in KINDS and set(arm.phases) <= set(PHASES) and "evaluation" in arm.phases
        assert ("sft_step" in arm.phases) == (arm.kind == "sft"), name
        assert ("rollout" in arm.phases) == (arm.kind == "rl"), name
        assert issubclass(implementations[name], ArmMethod), name
        assert implementations[name].__module__.startswith(f"lite_cpt.arms.{arm.implementation.split('.')[2]}."), name
    assert {n for n, arm in ARMS.items() if arm.joint} == {"multitask_sft", "multitask_rft"}
    # every arm class is some method's training code
    assert {cls for cls in _subclasses(ArmMethod) if cls.__module__.startswith("lite_cpt.")} == set(implementations.values())


def test_rl_arms_do_not_inherit_sft_hooks():
    for name, arm in ARMS.items():
        assert hasattr(arm.method_class(), "sft_hooks") == (arm.kind == "sft"), name


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_subpackage_is_listed_for_installation():
    import tomllib

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = {".".join(["lite_cpt", *init.parent.relative_to(PACKAGE).parts])
             for init in PACKAGE.rglob("__init__.py")}
    assert found <= listed, f"add to pyproject's packages: {sorted(found - listed)}"


#: The package's root: the CLI's tables, the recipe and its parts, and what every package below
#: shares (the CLI itself is the package cli/). A new module goes into the package of its stage
#: (docs/architecture.md), not here.
ROOT_MODULES = {
    "__init__", "cli_render",
    "recipe", "recipe_section", "recipe_model", "recipe_tasks", "recipe_run", "prompt_fields", "recipe_docs",
    "registry",
    "models", "unsloth_backend", "device_policy", "device_names",
    "errors", "io", "seeding", "progress",
}

#: The pipeline's packages (recipe -> data -> train -> run -> results, benchmarks apart) and
#: modules each must hold.
PIPELINE_PACKAGES = {
    "train": {"sft", "rft", "rollout", "rollout_batch", "logprob", "shared_prefix", "phase", "batching",
              "reference_adapter", "aggregation", "truncation", "sft_schedule", "numerics", "vision_cache", "oom"},
    "run": {"continual", "units", "ray_backend", "evaluate", "checkpoint", "locks", "preemption", "saved_rows",
            "artefacts", "integrity", "run_time_plan", "eval_prompt"},
    "results": {"runs", "metrics", "stats", "estimates", "predictions", "report", "compare", "consistency",
                "benchmark_figures"},
    "bench": {"gpu", "step", "build", "kernels", "registers", "update", "rollout", "prefix", "vision", "ray",
              "calibrate"},
    "tracking": {"tracker", "backends", "scalars", "wandb_files"},
    "tiny": {"model", "base", "fingerprint", "tables"},
}


def test_the_package_root_holds_only_the_cli_the_recipe_and_the_shared_modules():
    root = {path.stem for path in PACKAGE.glob("*.py")}
    assert root - ROOT_MODULES == set(), "put these in the package of their stage (docs/architecture.md)"
    assert ROOT_MODULES - root == set(), "listed as root modules but missing"
    assert len(root) <= 19


def test_the_cli_is_a_package_with_one_module_per_command_group():
    folder = PACKAGE / "cli"
    assert {path.stem for path in folder.glob("*.py")} == {"__init__", "__main__", "common", "bench", "data"}
    assert not (PACKAGE / "cli.py").exists()


def test_each_stage_of_the_pipeline_is_a_package_holding_its_modules():
    for package, modules in PIPELINE_PACKAGES.items():
        folder = PACKAGE / package
        assert (folder / "__init__.py").is_file(), package
        held = {path.stem for path in folder.glob("*.py")} - {"__init__"}
        assert modules <= held, f"{package}/ lacks {sorted(modules - held)}"
        assert not (PACKAGE / f"{package}.py").exists(), f"a module cannot share its package's name: {package}"


def test_every_benchmark_and_the_calibration_sit_in_bench():
    stray = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
                   if path.stem.startswith("bench_") or (path.stem == "calibrate" and path.parent.name != "bench"))
    assert stray == []


def _importers(graph: dict[str, set[str]], package: str) -> set[str]:
    """The modules outside lite_cpt.<package> that import a module of it."""
    inside = f"lite_cpt.{package}"
    return {name for name, imported in graph.items()
            if not (name == inside or name.startswith(inside + "."))
            and any(m == inside or m.startswith(inside + ".") for m in imported)}


def test_only_the_cli_imports_the_benchmarks():
    assert _importers(import_graph(), "bench") == {"lite_cpt.cli.bench"}


def test_training_and_results_import_nothing_above_them():
    """train/ runs one phase and knows nothing of reports, trackers, benchmarks or the CLI;
    results/ reads a run's files and needs no training code, tiny model, tracker or benchmark."""
    graph = import_graph()
    above = {"train": ("results", "tracking", "bench", "tiny", "cli"),
             "results": ("train", "tracking", "bench", "tiny", "cli")}
    for package, forbidden in above.items():
        for name, imported in graph.items():
            if name.startswith(f"lite_cpt.{package}."):
                reached = {m for m in imported for f in forbidden
                           if m == f"lite_cpt.{f}" or m.startswith(f"lite_cpt.{f}.")}
                assert reached == set(), f"{name} imports {sorted(reached)}"


#: Runtime dependencies no module imports by name, and who needs them.
NEEDED_BY_A_DEPENDENCY = {
    "torchvision": "transformers' Qwen2-VL image processors",
    "accelerate": "transformers, to load a model with a device_map (lite_cpt/models.py)",
    "sympy": "mathruler's grader, which does not declare it",
    "pylatexenc": "mathruler's grader, which does not declare it",
    "tqdm": "mathruler's grader, which does not declare it",
}
IMPORT_NAMES = {"pyyaml": "yaml", "pillow": "PIL"}


def _top_level_imports() -> set[str]:
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("-", "_")


def test_every_runtime_dependency_is_imported_by_the_package_or_needed_by_one_that_is():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]
    runtime = {_requirement_name(r) for r in project["dependencies"]}
    imported = _top_level_imports()
    unused = sorted(name for name in runtime
                    if IMPORT_NAMES.get(name, name) not in imported and name not in NEEDED_BY_A_DEPENDENCY)
    assert unused == [], f"runtime dependencies nothing uses: {unused} (a test-only one belongs in the dev extra)"
    assert "trl" in {_requirement_name(r) for r in project["optional-dependencies"]["dev"]}
    # The grader really imports what it leaves undeclared.
    grader = importlib.util.find_spec("mathruler.grader")
    source = Path(grader.origin).read_text(encoding="utf-8")
    for name in ("sympy", "pylatexenc", "tqdm"):
        assert re.search(rf"^\s*(import|from) {name}\b", source, re.M), name


def test_no_folder_of_the_repository_shadows_an_installed_package_name():
    """With the repository root on sys.path (pytest, `python -m` from a checkout), a top-level
    folder named like an installed package would be imported in its place: Hugging Face's
    `kernels`, which transformers and bitsandbytes import, is why the kernels live in lite_cpt/."""
    import importlib.machinery
    import sys

    root = PACKAGE.parent
    elsewhere = [p for p in sys.path if p and Path(p).resolve() != root.resolve()]
    assert not (root / "kernels").exists()
    # A folder with an __init__.py is a regular package and wins over one installed later on the
    # path; a folder without one is only a namespace package, which never does.
    packages = sorted(p.name for p in root.iterdir() if (p / "__init__.py").exists())
    shadowing = [name for name in packages if name != "lite_cpt"
                 and importlib.machinery.PathFinder.find_spec(name, elsewhere) is not None]
    assert shadowing == [], f"top-level folders named like installed packages: {shadowing}"
    assert importlib.util.find_spec("lite_cpt.kernels").origin == str(PACKAGE / "kernels" / "__init__.py")
