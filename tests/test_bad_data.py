"""Bad data in a published layout (VizWiz's official release: `train.json` beside `train/`
image files): corrupt image bytes, a missing image file, an empty question and a missing answer
are skipped and counted by the run's loading, reported by `lite-cpt data check`, and fail the
preflight when their share exceeds `faults.max_bad_data_fraction`."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from rich.console import Console

from lite_cpt.run.workspace import load_examples
from lite_cpt.data.check import data_check, render_data_check
from lite_cpt.data.fixtures import dataset_spec, write_fixtures
from lite_cpt.data.preflight import preflight, require_data
from lite_cpt.data.quality import screen
from lite_cpt.recipe import recipe_from_dict
from lite_cpt.tasks import build_task

ROWS = 8


@pytest.fixture(autouse=True)
def _private_hf_home(private_hf_home):
    """Every test here reads datasets through its own empty Hugging Face cache."""


@pytest.fixture(scope="module")
def damaged_root(tmp_path_factory) -> Path:
    """The fixtures, with four of VizWiz's eight train rows damaged the ways real downloads are."""
    root = write_fixtures(tmp_path_factory.mktemp("data"), n=ROWS, seed=2)
    base = root / dataset_spec("vizwiz").path
    rows = json.loads((base / "train.json").read_text())
    (base / "train" / rows[0]["image"]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # corrupt bytes
    (base / "train" / rows[1]["image"]).unlink()  # the image file is missing
    rows[2]["question"] = "   "  # empty question
    rows[3]["answers"] = []  # missing answer
    (base / "train.json").write_text(json.dumps(rows, indent=1))
    return root


def vizwiz_recipe(root: Path, fraction: float | None = None):
    raw = {
        "name": "bad",
        "data": {"root": str(root)},
        "tasks": [{"name": "vizwiz", "type": "vizwiz", "train_size": None, "test_size": 2}],
        "arms": [{"name": "sft"}],
        "evaluation": {"general": []},
    }
    if fraction is not None:
        raw["faults"] = {"max_bad_data_fraction": fraction}
    return recipe_from_dict(raw)


REASONS = ["cannot be opened", "not found", "empty question", "missing answer"]


def test_each_kind_of_bad_item_is_found_with_its_reason(damaged_root):
    recipe = vizwiz_recipe(damaged_root)
    task = build_task(recipe.tasks[0], recipe.data.root, recipe.seed)
    samples = task.load("train", None)
    good, bad = screen(samples)
    assert len(samples) == ROWS and len(good) == ROWS - 4
    reasons = " | ".join(item.reason for item in bad)
    for words in REASONS:
        assert words in reasons, reasons
    assert "VizWiz_train_00000001.jpg" in reasons  # the missing file is named


def test_the_run_skips_bad_items_counts_and_logs_them(damaged_root, caplog):
    recipe = vizwiz_recipe(damaged_root)
    task = build_task(recipe.tasks[0], recipe.data.root, recipe.seed)
    with caplog.at_level(logging.WARNING):
        examples = load_examples(task, "train", None)
    assert len(examples) == ROWS - 4
    said = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("vizwiz: skipped 4 of 8 items of split 'train': ") for line in said), said
    assert all(e.sample.question.strip() and e.sample.answer for e in examples)


def test_data_check_reports_the_unusable_items(damaged_root):
    rows = {row["name"]: row for row in data_check(vizwiz_recipe(damaged_root))}
    row = rows["vizwiz"]
    assert row["train_bad"] == 4 and row["test_bad"] == 0
    out = io.StringIO()
    render_data_check(list(rows.values()), Console(file=out, width=200))
    text = out.getvalue()
    assert "4 of 8 items unusable" in text and "empty question" in text


def test_preflight_fails_past_the_configured_bad_fraction(damaged_root):
    problems = [str(p) for p in preflight(vizwiz_recipe(damaged_root))]  # default 0.05
    assert len(problems) == 1, problems
    assert "split 'train'" in problems[0] and "4 of 8 items unusable" in problems[0]
    assert "faults.max_bad_data_fraction" in problems[0]
    assert preflight(vizwiz_recipe(damaged_root, fraction=0.5)) == []


# ---------------------------------------------------------------------------------------------
# Null gold answers: skipped, counted and named by the preflight and `data check`


@pytest.fixture(scope="module")
def null_answer_root(tmp_path_factory) -> Path:
    """The fixtures with one null answer in GQA's official JSON and one in PathVQA's hub parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = write_fixtures(tmp_path_factory.mktemp("data"), n=ROWS, seed=4)
    questions_file = root / dataset_spec("gqa").path / "train_balanced_questions.json"
    questions = json.loads(questions_file.read_text())
    first = next(iter(questions))
    questions[first]["answer"] = None
    questions_file.write_text(json.dumps(questions))
    parquet = next((root / "hub").glob("datasets--flaviagiammarino--path-vqa/snapshots/*/data/train-*.parquet"))
    table = pq.read_table(parquet)
    answers = table.column("answer").to_pylist()
    answers[2] = None
    index = table.schema.get_field_index("answer")
    table = table.set_column(index, table.schema.field(index), pa.array(answers, pa.string()))
    pq.write_table(table, parquet.resolve())
    return root


def null_answer_recipe(root: Path, fraction: float = 0.2):
    return recipe_from_dict({
        "name": "nulls",
        "data": {"root": str(root)},
        "tasks": [{"name": t, "type": t, "train_size": None, "test_size": 2} for t in ("gqa", "pathvqa")],
        "arms": [{"name": "sft"}],
        "evaluation": {"general": []},
        "faults": {"max_bad_data_fraction": fraction},
    })


def test_a_null_answer_is_skipped_never_the_answer_none(null_answer_root):
    recipe = null_answer_recipe(null_answer_root)
    for cfg, row_id in ((recipe.tasks[0], None), (recipe.tasks[1], "pathvqa/train/2")):
        task = build_task(cfg, recipe.data.root, recipe.seed)
        examples = load_examples(task, "train", None)
        assert len(examples) == ROWS - 1
        assert all(e.sample.answer and e.sample.answer.lower() != "none" for e in examples)
        good, bad = screen(task.load("train", None))
        assert [item.reason for item in bad] == ["missing answer"]
        if row_id:
            assert bad[0].id == row_id


def test_data_check_and_the_preflight_name_null_answers(null_answer_root, caplog):
    rows = {row["name"]: row for row in data_check(null_answer_recipe(null_answer_root))}
    assert (rows["gqa"]["train_bad"], rows["pathvqa"]["train_bad"]) == (1, 1)
    assert rows["gqa"]["status"] == "found"  # within faults.max_bad_data_fraction: skipped, not fatal
    out = io.StringIO()
    render_data_check(list(rows.values()), Console(file=out, width=300))
    text = out.getvalue()
    assert "tasks.1 (pathvqa): train split 'train': 1 of 8 items unusable (pathvqa/train/2: missing answer)" in text
    assert "tasks.0 (gqa): train split 'train': 1 of 8 items unusable (" in text
    with caplog.at_level(logging.WARNING):
        require_data(null_answer_recipe(null_answer_root))
    said = [record.getMessage() for record in caplog.records]
    assert ("tasks.1 (pathvqa): split 'train': 1 of 8 items unusable (pathvqa/train/2: missing answer); "
            "they are skipped (never trained on or scored)") in said, said
    problems = [str(p) for p in preflight(null_answer_recipe(null_answer_root, fraction=0.0))]
    assert len(problems) == 2 and "missing answer), more than faults.max_bad_data_fraction=0.0" in problems[1]
