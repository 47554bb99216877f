"""Mutation testing of one module with mutmut, on demand (too slow for CI on 2 cores).

    nice -n 10 python tests/mutate.py lite_cpt/results/metrics.py           # score + surviving mutants
    nice -n 10 python tests/mutate.py lite_cpt/tasks/ --tests tests/test_real_tasks.py
    python tests/mutate.py lite_cpt/train/rft.py --show lite_cpt.train.rft.x_draw_groups__mutmut_12
    nice -n 19 python tests/mutate.py lite_cpt/train/rft.py --sample 0    # the mutants numbered ...0

Each module is mutated in its own scratch copy of the repository under .mutation/<module>/, with
only the tests that exercise it (MODULE_TESTS below, or --tests), so runs of different modules
never share state and a re-run only re-tests what changed. The score counts a mutant as caught
when a test fails or times out on it; a mutant no selected test reaches counts as surviving.
A module too large to test whole on 2 cores is scored on a deterministic sample: `--sample 05`
runs only the mutants whose number (within their function) ends in 0 or 5, about a fifth, and
the score is over the mutants run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("lite_cpt", "tests", "recipes", "README.md", "docs")

# The tests that exercise each module; a module not listed runs the whole suite.
MODULE_TESTS = {
    "lite_cpt/kernels/grpo_loss.py": ["tests/test_grpo_loss.py", "tests/test_properties.py"],
    "lite_cpt/kernels/fused_logprob.py": ["tests/test_fused_logprob.py"],
    "lite_cpt/kernels/backend.py": ["tests/test_fused_logprob.py", "tests/test_grpo_loss.py"],
    "lite_cpt/results/metrics.py": ["tests/test_metrics.py", "tests/test_properties.py"],
    "lite_cpt/train/sft.py": ["tests/test_sft_loop.py", "tests/test_training_behaviour.py",
                        "tests/test_baselines.py::test_large_ewc_weight_keeps_parameters_near_anchor",
                        "tests/test_midphase.py::test_a_phase_resumed_from_its_checkpoint_ends_like_one_that_never_stopped",
                        "tests/test_numerics.py::test_sft_step_with_nan_loss_is_skipped_and_counted_and_k_in_a_row_stop",
                        "tests/test_oom.py::test_an_sft_step_reaches_the_explainer_as_sft_step"],
    "lite_cpt/arms/": ["tests/test_training_behaviour.py", "tests/test_baselines.py", "tests/test_rif.py", "tests/test_structure.py"],
    "lite_cpt/train/rft.py": ["tests/test_rft.py", "tests/test_training_behaviour.py", "tests/test_rif.py",
                        "tests/test_midphase.py", "tests/test_numerics.py"],
    "lite_cpt/train/policy_update.py": ["tests/test_rft.py", "tests/test_aggregation.py", "tests/test_shared_prefix.py",
                                        "tests/test_training_behaviour.py", "tests/test_numerics.py"],
    "lite_cpt/arms/rif/method.py": ["tests/test_rif.py"],
    "lite_cpt/run/continual.py": ["tests/test_run_files.py", "tests/test_bad_data.py", "tests/test_continual.py",
                              "tests/test_resume.py"],
    "lite_cpt/run/rows.py": ["tests/test_run_files.py", "tests/test_continual.py", "tests/test_resume.py",
                         "tests/test_eval_prompt.py", "tests/test_benchmark_figures.py",
                         "tests/test_verified_results.py"],
    "lite_cpt/data/loaders.py": ["tests/test_real_tasks.py", "tests/test_data_check.py", "tests/test_properties.py",
                                 "tests/test_custom_tasks.py", "tests/test_bad_data.py"],
    "lite_cpt/data/location.py": ["tests/test_real_tasks.py", "tests/test_data_check.py", "tests/test_custom_tasks.py",
                                  "tests/test_bad_data.py"],
    "lite_cpt/train/rollout.py": ["tests/test_sampling.py", "tests/test_generation_path.py", "tests/test_families.py",
                            "tests/test_rft.py", "tests/test_oom.py"],
    "lite_cpt/train/logprob.py": ["tests/test_families.py", "tests/test_reference_adapter.py", "tests/test_rft.py",
                            "tests/test_no_full_logits.py"],
    "lite_cpt/train/batching.py": ["tests/test_batching.py", "tests/test_generation_path.py", "tests/test_sampling.py", "tests/test_no_full_logits.py",
                             "tests/test_training_behaviour.py", "tests/test_sft_loop.py", "tests/test_families.py"],
    "lite_cpt/run/checkpoint.py": ["tests/test_checkpoint.py", "tests/test_midphase.py"],
    "lite_cpt/planner/timeplan.py": ["tests/test_timeplan.py", "tests/test_planner.py", "tests/test_estimates.py"],
    "lite_cpt/planner/calibration.py": ["tests/test_timeplan.py", "tests/test_planner.py"],
    "lite_cpt/planner/budget.py": ["tests/test_timeplan.py", "tests/test_planner.py"],
    "lite_cpt/train/phase.py": ["tests/test_sft_loop.py", "tests/test_training_behaviour.py", "tests/test_rft.py",
                          "tests/test_no_full_logits.py", "tests/test_midphase.py"],
    "lite_cpt/run/integrity.py": ["tests/test_integrity.py", "tests/test_run_files.py", "tests/test_checkpoint.py"],
    "lite_cpt/io.py": ["tests/test_integrity.py", "tests/test_run_files.py", "tests/test_checkpoint.py",
                       "tests/test_resume.py"],
    "lite_cpt/train/reference_adapter.py": ["tests/test_reference_adapter.py", "tests/test_rft.py"],
    "lite_cpt/results/stats.py": ["tests/test_stats.py", "tests/test_estimates.py", "tests/test_compare.py"],
    "lite_cpt/results/compare.py": ["tests/test_compare.py"],
    "lite_cpt/results/predictions.py": ["tests/test_estimates.py", "tests/test_continual.py"],
    "lite_cpt/train/numerics.py": ["tests/test_numerics.py"],
    "lite_cpt/run/locks.py": ["tests/test_locks.py"],
    "lite_cpt/run/preemption.py": ["tests/test_preemption.py", "tests/test_midphase.py"],
    "lite_cpt/recipe.py": ["tests/test_recipe.py", "tests/test_cli.py", "tests/test_properties.py",
                           "tests/test_custom_tasks.py", "tests/test_real_tasks.py", "tests/test_tiny.py"],
    "lite_cpt/results/report.py": ["tests/test_report.py", "tests/test_estimates.py", "tests/test_metrics.py"],
    "lite_cpt/train/oom.py": ["tests/test_oom.py"],
    "lite_cpt/results/estimates.py": ["tests/test_estimates.py", "tests/test_compare.py"],
    "lite_cpt/results/runs.py": ["tests/test_estimates.py", "tests/test_report.py", "tests/test_compare.py"],
    "lite_cpt/seeding.py": ["tests/test_resume.py", "tests/test_rif.py", "tests/test_training_behaviour.py"],
    "lite_cpt/data/images.py": ["tests/test_batching.py", "tests/test_lazy_images.py", "tests/test_real_tasks.py",
                                "tests/test_bad_data.py"],
    "lite_cpt/run/units.py": ["tests/test_units.py", "tests/test_ray_backend.py"],
    "lite_cpt/run/evaluate.py": ["tests/test_planner.py", "tests/test_continual.py", "tests/test_generation_path.py"],
    "lite_cpt/tasks/": ["tests/test_real_tasks.py", "tests/test_answer_parsing.py", "tests/test_reward_options.py",
                        "tests/test_synthetic.py", "tests/test_task_samples.py", "tests/test_custom_tasks.py"],
}

CONFIG = """\
[tool.mutmut]
source_paths = ["lite_cpt/"]
only_mutate = {only}
also_copy = ["recipes/", "README.md", "docs/"]
pytest_add_cli_args_test_selection = {tests}
# torch is not fork-safe after a test session: fork each mutant from a clean server process.
process_isolation = "forkserver"
# A shared machine slows every test run: a mutant times out only well past its tests' own time.
timeout_constant = 30.0

[tool.pytest.ini_options]
pythonpath = ["."]
addopts = "-q -p no:cacheprovider"
markers = ["slow: end-to-end runs on the tiny model"]
"""


def scratch_copy(module: str, tests: list[str]) -> Path:
    """.mutation/<module>/ holding the sources (mtimes kept, so mutmut's cache stays valid)."""
    work = ROOT / ".mutation" / module.strip("/").replace("/", "_").removesuffix(".py")
    work.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, work / name)
    only = [module + "*"] if module.endswith("/") else [module]
    # The scratch pyproject is mutmut's configuration plus the project's own tables, which the
    # structure tests read (the runtime dependencies, the packages to install).
    original = (ROOT / "pyproject.toml").read_text()
    project = original[original.index("[project]"):original.index("\n[tool.pytest")]
    config = CONFIG.format(only=json.dumps(only), tests=json.dumps(tests))
    (work / "pyproject.toml").write_text(config + "\n" + project + "\n")
    return work


def mutmut(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=work, text=True, capture_output=True)


def score(work: Path) -> dict:
    mutmut(work, "export-cicd-stats")
    stats = json.loads((work / "mutants" / "mutmut-cicd-stats.json").read_text())
    caught = stats["killed"] + stats["timeout"]
    tested = caught + stats["survived"] + stats["no_tests"] + stats["suspicious"] + stats["segfault"]
    stats["tested"] = tested
    stats["score"] = caught / tested if tested else float("nan")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="a file (lite_cpt/results/metrics.py) or a package folder ending in / (lite_cpt/tasks/)")
    parser.add_argument("--tests", nargs="+", help="test files to run against the mutants (default: MODULE_TESTS)")
    parser.add_argument("--show", metavar="MUTANT", help="print the diff of one mutant of an earlier run")
    parser.add_argument("--sample", metavar="DIGITS",
                        help="run only the mutants whose number ends in one of these digits (05: about 1 in 5)")
    parser.add_argument("--mutants", nargs="+", metavar="PATTERN",
                        help="run only these mutants (names or fnmatch patterns, e.g. 'lite_cpt.train.rft.x_grpo*')")
    args = parser.parse_args(argv)
    tests = args.tests or MODULE_TESTS.get(args.module, ["tests/"])
    work = scratch_copy(args.module, tests)
    if args.show:
        print(mutmut(work, "show", args.show).stdout)
        return 0
    selected = list(args.mutants or [])
    if args.sample:
        selected.append(f"*__mutmut_*[{args.sample}]")
    run = subprocess.run([sys.executable, "-m", "mutmut", "run", *selected], cwd=work)
    if run.returncode:
        return run.returncode
    stats = score(work)
    survivors = [line.strip() for line in mutmut(work, "results").stdout.splitlines()
                 if line.strip() and not line.strip().endswith("not checked")]
    print("\n".join(survivors))
    sampled = f" (sample: mutants numbered ...{' or ...'.join(args.sample)})" if args.sample else ""
    print(f"{args.module}{sampled}: {stats['killed'] + stats['timeout']} of {stats['tested']} mutants caught, "
          f"score {stats['score']:.1%} (survived {stats['survived']}, no tests {stats['no_tests']}, "
          f"timeout {stats['timeout']}, suspicious {stats['suspicious']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
