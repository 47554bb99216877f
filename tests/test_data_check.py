"""`data_check` and `check_sources` over a recipe of the seven real tasks and three benchmarks."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from lite_cpt.data.check import check_sources, data_check, render_data_check
from lite_cpt.data.fixtures import RECIPE_SOURCES, write_fixtures
from lite_cpt.recipe import recipe_from_dict

TASKS = ["scienceqa", "textvqa", "vizwiz", "gqa", "geometry3k", "pathvqa", "clevr"]
BENCHMARKS = ["mmmu", "mmlu_pro", "pope"]


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("data"), n=6, seed=1)


@pytest.fixture(autouse=True)
def _private_hf_home(private_hf_home):
    """Every test here reads datasets through its own empty Hugging Face cache."""


def seven_tasks(root: Path | None, **overrides):
    raw = {
        "name": "check",
        "data": {"root": str(root) if root else None},
        "tasks": [
            {"name": t, "type": t, "source": RECIPE_SOURCES[t], "train_size": 4, "test_size": 100}
            for t in TASKS
        ]
        + [{"name": "mini", "type": "mini_clevr", "train_size": 5, "test_size": 3}],
        "arms": [{"name": "sft"}],
        "evaluation": {
            "general": [{"name": b, "type": b, "source": RECIPE_SOURCES[b], "size": 4} for b in BENCHMARKS]
        },
    }
    raw.update(overrides)
    return recipe_from_dict(raw)


def test_data_check_on_the_fixture_directory(fixture_root):
    rows = {row["name"]: row for row in data_check(seven_tasks(fixture_root))}
    assert list(rows) == TASKS + ["mini"] + BENCHMARKS
    for name in TASKS + BENCHMARKS:
        row = rows[name]
        assert row["status"] == "found", row
        assert row["source"] == str(fixture_root / name)
        assert row["test"] == (4 if name in BENCHMARKS else row["test_available"])
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
        assert row["status"] == "missing" and row["train"] is None and row["prompt"] is None
        assert str(root / name) in row["expected"]
        assert RECIPE_SOURCES[name]["hf_id"] in row["expected"]
        assert f"huggingface-cli download {RECIPE_SOURCES[name]['hf_id']} --repo-type dataset" in row["fix"]
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
    recipe.evaluation.general[2].source.path = None  # hf_id only, and not cached
    problems = check_sources(recipe)
    assert len(problems) == 2
    assert problems[0].startswith(f"tasks.2.source.path: no data at {fixture_root / 'vizwiz_typo'}")
    assert problems[1].startswith(
        "evaluation.general.2.source.hf_id: lmms-lab/POPE is not in the Hugging Face cache"
    )
    missing = check_sources(seven_tasks(tmp_path / "nowhere"))
    assert [p.split(":")[0] for p in missing] == (
        [f"tasks.{i}.source.path" for i in range(7)]
        + [f"evaluation.general.{i}.source.path" for i in range(3)]
    )  # the synthetic task (tasks.7) needs no data


def test_check_sources_accepts_an_hf_id_present_in_the_cache(tmp_path):
    snapshot = tmp_path / "hf_home" / "hub" / "datasets--lmms-lab--POPE" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    recipe = seven_tasks(tmp_path / "nowhere")
    problems = check_sources(recipe)
    assert not any(p.startswith("evaluation.general.2") for p in problems)  # local path absent, cache present
