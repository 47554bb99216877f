"""`data_check`, `check_sources` and the run's preflight over a recipe of the seven real tasks
and three benchmarks, on fixtures in the published layouts."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from lite_cpt.data.check import check_sources, data_check, render_data_check
from lite_cpt.data.fixtures import dataset_spec, write_fixtures
from lite_cpt.data.preflight import preflight, require_data
from lite_cpt.errors import UserError
from lite_cpt.recipe import recipe_from_dict

TASKS = ["scienceqa", "textvqa", "vizwiz", "gqa", "geometry3k", "pathvqa", "clevr"]
BENCHMARKS = ["mmmu", "mmlu_pro", "pope"]
OFFICIAL = {"vizwiz", "gqa"}  # official release layouts under data.root; the rest: <data.root>/hub


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("data"), n=6, seed=1)


@pytest.fixture(autouse=True)
def _private_hf_home(private_hf_home):
    """Every test here reads datasets through its own empty Hugging Face cache."""


def seven_tasks(root: Path | None, train_size: int = 4, **overrides):
    """The paper's tasks with no `source` block: every type's own dataset."""
    raw = {
        "name": "check",
        "data": {"root": str(root) if root else None},
        "tasks": [{"name": t, "type": t, "train_size": train_size, "test_size": 2} for t in TASKS]
        + [{"name": "mini", "type": "mini_clevr", "train_size": 5, "test_size": 3}],
        "arms": [{"name": "sft"}],
        "evaluation": {"general": [{"name": b, "type": b, "size": 4} for b in BENCHMARKS]},
    }
    raw.update(overrides)
    return recipe_from_dict(raw)


def test_data_check_on_the_fixture_directory(fixture_root):
    rows = {row["name"]: row for row in data_check(seven_tasks(fixture_root))}
    assert list(rows) == TASKS + ["mini"] + BENCHMARKS
    for name in TASKS + BENCHMARKS:
        row = rows[name]
        assert row["status"] == "found", row
        expected = str(fixture_root / name) if name in OFFICIAL else f"hf cache: {dataset_spec(name).hf_id}"
        assert row["source"] == expected
        assert row["test"] == (4 if name in BENCHMARKS else min(2, row["test_available"]))
        assert row["prompt"] and row["problem"] is None
    assert (
        rows["scienceqa"]["train"] == 4 and rows["scienceqa"]["train_available"] == 6
    )  # text-only rows skipped
    assert (rows["clevr"]["train_available"], rows["clevr"]["test_available"]) == (9, 3)  # 12 rows, 80% / 20%
    assert rows["mmmu"]["train"] is None and rows["mmmu"]["test_available"] == 6
    assert "Options:" in rows["scienceqa"]["prompt"] and "(E) " in rows["mmlu_pro"]["prompt"]
    assert rows["mini"]["status"] == "synthetic" and (rows["mini"]["train"], rows["mini"]["test"]) == (5, 3)
    assert "How many" in rows["mini"]["prompt"]


def test_data_check_on_a_missing_directory_says_what_and_how(tmp_path):
    root = tmp_path / "nowhere"
    rows = {row["name"]: row for row in data_check(seven_tasks(root))}
    for name in TASKS + BENCHMARKS:
        row = rows[name]
        spec = dataset_spec(name)
        assert row["status"] == "missing" and row["train"] is None and row["prompt"] is None
        assert str(root / name) in row["expected"]
        assert spec.download.replace(" data/", f" {root}/") in row["fix"]  # its own download command
        if spec.hf_id:
            assert spec.hf_id in row["expected"]
            assert f"hf download {spec.hf_id} --repo-type dataset" in row["fix"]
            assert f"--cache-dir {root}/hub" in row["fix"]
    assert rows["mini"]["status"] == "synthetic"


def test_data_check_reports_a_missing_split(fixture_root):
    recipe = seven_tasks(fixture_root)
    recipe.tasks[1].source.test_split = "test"  # textvqa publishes train/validation (test has no answers)
    row = data_check(recipe)[1]
    assert row["status"] == "error" and "splits found: train, validation" in row["problem"]


def test_render_data_check_prints_the_table_and_the_fixes(fixture_root, tmp_path):
    recipe = seven_tasks(fixture_root)
    recipe.tasks[2].source.path = str(tmp_path / "vizwiz_elsewhere")
    out = io.StringIO()
    render_data_check(data_check(recipe), Console(file=out, width=200, color_system=None))
    text = out.getvalue()
    for name in TASKS + BENCHMARKS:
        assert name in text
    assert "found" in text and "missing" in text and "synthetic" in text
    assert f"tasks.2 (vizwiz): no data at {tmp_path / 'vizwiz_elsewhere'}" in text
    assert "[image 1]" in text  # prompts are printed as text, not as rich markup


def test_check_sources_names_the_key_and_the_resolved_path(fixture_root, tmp_path):
    assert check_sources(seven_tasks(fixture_root)) == []
    recipe = seven_tasks(fixture_root)
    recipe.tasks[2].source.path = "vizwiz_typo"
    recipe.evaluation.general[2].source.hf_id = "lmms-lab/POPE-elsewhere"
    problems = check_sources(recipe)
    assert len(problems) == 2
    assert problems[0].startswith(f"tasks.2.source.path: no data at {fixture_root / 'vizwiz_typo'}")
    assert "lmms-lab/POPE-elsewhere is not in a Hugging Face hub cache" in problems[1]
    missing = check_sources(seven_tasks(tmp_path / "nowhere"))
    assert [p.split(":")[0] for p in missing] == (
        [f"tasks.{i}.source.path" for i in range(7)]
        + [f"evaluation.general.{i}.source.path" for i in range(3)]
    )  # the synthetic task (tasks.7) needs no data


def test_check_sources_accepts_an_hf_id_present_in_the_default_cache(tmp_path):
    repo = tmp_path / "hf_home" / "hub" / "datasets--lmms-lab--POPE"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    problems = check_sources(seven_tasks(tmp_path / "nowhere"))
    assert not any(p.startswith("evaluation.general.2") for p in problems)  # local path absent, cache present


def test_fixture_hub_repos_are_a_valid_hub_cache(fixture_root):
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(fixture_root / "hub")
    assert not info.warnings
    repos = {repo.repo_id: repo for repo in info.repos}
    hub_types = [t for t in TASKS + BENCHMARKS if t not in OFFICIAL]
    assert set(repos) == {dataset_spec(t).hf_id for t in hub_types}
    assert all(repo.repo_type == "dataset" and "main" in repo.refs for repo in repos.values())
    names = {f.file_name for f in next(iter(repos["derek-thomas/ScienceQA"].revisions)).files}
    assert len(names) == 3 and all(
        n.startswith(("train-00000-of-00001-", "validation-00000-of-00001-", "test-00000-of-00001-"))
        for n in names
    )


# ---------------------------------------------------------------------------------------------
# Preflight


def test_preflight_passes_on_complete_data(fixture_root):
    assert preflight(seven_tasks(fixture_root)) == []
    require_data(seven_tasks(fixture_root))  # no error


def test_preflight_reports_every_problem_at_once_with_its_fix(fixture_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(fixture_root, root, symlinks=True)
    shutil.rmtree(root / "hub" / "datasets--lmms-lab--textvqa")  # a dataset not downloaded
    rows = json.loads((root / "vizwiz" / "train.json").read_text())
    for row in rows:  # every image of a split broken
        (root / "vizwiz" / "train" / row["image"]).write_bytes(b"not a jpeg")
    recipe = seven_tasks(root, train_size=5)
    recipe.tasks[0].train_size = 50  # more than ScienceQA's fixture has
    with pytest.raises(UserError) as error:
        require_data(recipe)
    message = str(error.value)
    assert "nothing was trained" in message
    assert f"tasks.1 (textvqa): no data at {root / 'textvqa'}" in message
    assert "lmms-lab/textvqa is not in a Hugging Face hub cache" in message
    assert f"hf download lmms-lab/textvqa --repo-type dataset --cache-dir {root}/hub" in message
    assert "tasks.0 (scienceqa): split 'train' has 6 usable rows, fewer than tasks.0.train_size=50" in message
    assert "set tasks.0.train_size=6" in message
    assert "tasks.2 (vizwiz): split 'train': 5 of 5 items unusable (" in message and "cannot be opened" in message
    assert len(preflight(recipe)) == 3


def test_preflight_finds_a_split_the_dataset_does_not_publish(fixture_root):
    recipe = seven_tasks(fixture_root)
    recipe.tasks[2].source.path = None  # lmms-lab/VizWiz-VQA publishes val and test only
    recipe.tasks[2].source.hf_id = "lmms-lab/VizWiz-VQA"
    problems = preflight(recipe)
    assert len(problems) == 1 and problems[0].key == "tasks.2 (vizwiz)"


def test_data_check_and_the_preflight_share_one_verdict_on_a_budget(fixture_root, tmp_path, monkeypatch):
    """A split with fewer rows than `train_size`: the run's preflight refuses, so `data check`
    prints the same problem and fix and exits non-zero (it used to print '6 of 6' and exit 0)."""
    import yaml
    from typer.testing import CliRunner

    import lite_cpt.cli as cli
    import lite_cpt.cli.data as cli_data

    raw = {
        "name": "short",
        "data": {"root": str(fixture_root)},
        "tasks": [{"name": "pathvqa", "type": "pathvqa", "train_size": 1000, "test_size": 2}],
        "arms": [{"name": "sft"}],
        "evaluation": {"general": []},
    }
    path = tmp_path / "short.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as refused:
        require_data(recipe_from_dict(raw))
    problem_lines = [line.strip() for line in str(refused.value).splitlines()[1:]]
    assert problem_lines == ["tasks.0 (pathvqa): split 'train' has 6 usable rows, fewer than tasks.0.train_size=1000",
                             "to fix: set tasks.0.train_size=6 (or lower), or null to use the whole split"]
    monkeypatch.setattr(cli_data, "console", Console(width=300, color_system=None))
    result = CliRunner().invoke(cli.app, ["data", "check", str(path)])
    assert result.exit_code == 1, result.output
    printed = [line.strip() for line in result.output.splitlines()]
    assert problem_lines[0] in printed and problem_lines[1] in printed
    row = data_check(recipe_from_dict(raw))[0]
    assert row["status"] == "error" and (row["train"], row["train_available"]) == (6, 6)
