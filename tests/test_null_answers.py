"""A row whose gold answer is null (or empty) is unusable for every task type: the loader keeps
the answer missing, `screen` skips the row as "missing answer", so it is never a training target
or a test answer. Rows are written in each dataset's published schema."""

from __future__ import annotations

import json

import pytest

from lite_cpt.data.quality import item_problem
from lite_cpt.recipe import recipe_from_dict
from lite_cpt.tasks import build_task

TASK_TYPES = ["scienceqa", "textvqa", "vizwiz", "gqa", "pathvqa", "geometry3k", "clevr"]
BENCHMARK_TYPES = ["mmmu", "mmlu_pro", "pope"]

# Each type's published row with its answer cell null (and, where a row has several ways to hold
# an answer, every way null): a real download's hole, not a made-up field.
NULL_ROWS = {
    "scienceqa": {"question": "Which animal's mouth is adapted to tear through meat?", "choices": ["leopard", "cow"],
                  "answer": None, "hint": "", "solution": "", "subject": "natural science"},
    "textvqa": {"question": "what brand is the camera?", "answers": None, "question_id": 34602},
    "vizwiz": {"image": "VizWiz_train_00000007.jpg", "question": "What is this?",
               "answers": [{"answer": None, "answer_confidence": "yes"}] * 10, "answer_type": "other",
               "answerable": 1},
    "gqa": {"question": "Is the car red?", "answer": None, "fullAnswer": None, "imageId": "2354786"},
    "pathvqa": {"question": "is there fibrosis?", "answer": None},
    "geometry3k": {"problem": "<image>Find x.", "answer": None, "choices": ["3", "6", "9", "12"]},
    "clevr": {"problem": "How many items are there in the image?", "solution": None},
    "mmmu": {"id": "validation_Art_1", "question": "Which era is <image 1> from?",
             "options": "['Baroque', 'Gothic', 'Modern', 'Romanesque']", "answer": None,
             "question_type": "multiple-choice"},
    "mmlu_pro": {"question_id": 70, "question": "Typical advertising regulatory bodies suggest ...",
                 "options": ["Safe practices", "Unsafe practices", "Harm", "Fear"], "answer": None,
                 "answer_index": None, "category": "business"},
    "pope": {"question_id": "1", "question": "Is there a snowboard in the image?", "answer": None,
             "category": "adversarial"},
}


def built(type_name: str):
    benchmark = type_name in BENCHMARK_TYPES
    section = {"name": type_name, "type": type_name}
    raw = {"name": "t", "arms": [{"name": "sft"}],
           "tasks": [] if benchmark else [section],
           "evaluation": {"general": [section] if benchmark else []}}
    if benchmark:  # a recipe needs a task; a synthetic one reads no data
        raw["tasks"] = [{"name": "mini", "type": "mini_clevr"}]
    recipe = recipe_from_dict(raw)
    cfg = recipe.evaluation.general[0] if benchmark else recipe.tasks[0]
    return build_task(cfg, None, 0, benchmark=benchmark)


@pytest.mark.parametrize("type_name", TASK_TYPES + BENCHMARK_TYPES)
def test_a_null_answer_is_missing_never_the_answer_none(type_name):
    task = built(type_name)
    sample = task.to_sample(dict(NULL_ROWS[type_name]), f"{type_name}/train/0", ())
    assert "none" not in (sample.answer.lower(), *[a.lower() for a in sample.answers or []])
    assert item_problem(sample) == "missing answer"


@pytest.mark.parametrize("answers", [
    ["nikon"] * 9 + [None],  # one of ten human answers null
    ["nikon"] * 9 + [""],  # or empty
    [],  # no answers at all
])
def test_a_vqa_row_with_a_null_human_answer_is_unusable(answers):
    sample = built("textvqa").to_sample({"question": "what brand?", "answers": answers}, "q", ())
    assert item_problem(sample) == "missing answer" and sample.answers == []


def test_scienceqa_null_answer_is_a_clean_skip_not_a_type_error():
    """The loader's row reading turns a null answer index into a missing answer, without the
    `TypeError: int() argument ...` it used to show as the reason."""
    sample = built("scienceqa").to_sample(dict(NULL_ROWS["scienceqa"]), "scienceqa/train/4", ())
    assert (sample.answer, item_problem(sample)) == ("", "missing answer")


def test_an_mmlu_pro_answer_index_alone_still_gives_the_letter():
    row = dict(NULL_ROWS["mmlu_pro"], answer_index=2)
    assert built("mmlu_pro").to_sample(row, "70", ()).answer == "C"


@pytest.mark.parametrize("good, cell", [("yes", None), ("yes", "  "), (["yes"], []), (["yes", "no"], ["yes", None])])
def test_a_custom_task_skips_a_null_answer(tmp_path, good, cell):
    (tmp_path / "mine").mkdir()  # one answer column, of one type (a string, or a list of them)
    rows = [{"question": "Is the lesion malignant?", "answer": good}, {"question": "Is it round?", "answer": cell}]
    (tmp_path / "mine" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = recipe_from_dict({"name": "t", "arms": [{"name": "sft"}], "tasks": [{
        "name": "mine", "type": "custom", "source": {"path": str(tmp_path / "mine")},
        "custom": {"metric": "exact", "columns": {"images": []}}}]})
    samples = build_task(recipe.tasks[0]).load("test", None)
    assert [item_problem(s) for s in samples] == [None, "missing answer"]
