"""Rows in each dataset's published schema become the samples the tasks score, field by field;
and the scoring rules' edge cases (tolerances, case, commas) on hand-written answers."""

from __future__ import annotations

import random

import pytest

from lite_cpt.data.images import FileImage
from lite_cpt.recipe import BenchmarkConfig, TaskConfig
from lite_cpt.tasks import build_task
from lite_cpt.tasks.base import Sample, Task, numeric_match
from lite_cpt.tasks.mmmu_scoring import mmmu_choice
from lite_cpt.tasks.vqa import pope_yes_no

IMAGE = (FileImage("diagram.png", ()),)


def task(type_name: str, benchmark: bool = False, **settings):
    config_type = BenchmarkConfig if benchmark else TaskConfig
    return build_task(config_type(name=type_name, type=type_name, **settings), None, 0, benchmark=benchmark)


# ----------------------------------------------------------------------------- Geometry3K

GEOMETRY_ROW = {"problem": "<image>Find x.", "answer": "2\\sqrt{3}", "choices": ["4", "2\\sqrt{3}", "9", "3"]}


def test_geometry_free_form_sample_keeps_question_answer_image_and_choices():
    sample = task("geometry3k").to_sample(dict(GEOMETRY_ROW), "g1", IMAGE)
    assert sample.question == "Find x." and sample.answer == "2\\sqrt{3}" and sample.answers == ["2\\sqrt{3}"]
    assert sample.images == IMAGE and not sample.choices
    assert sample.meta["choices"] == ["4", "2\\sqrt{3}", "9", "3"]
    assert task("geometry3k").score("\\sqrt{12}", sample) == 1.0  # equal by value


def test_geometry_multiple_choice_reads_the_letter_or_the_value():
    geometry = task("geometry3k", multiple_choice=True)
    sample = geometry.to_sample(dict(GEOMETRY_ROW), "g1", IMAGE)
    assert sample.answer == "B" and sample.meta["value"] == "2\\sqrt{3}" and sample.images == IMAGE
    assert geometry.score("B", sample) == 1.0
    assert geometry.score("\\sqrt{12}", sample) == 1.0, "the right value in another form scores"
    assert geometry.score("9", sample) == 0.0
    # an answer that is none of the choices stays the answer (and its own value)
    odd = geometry.to_sample({**GEOMETRY_ROW, "answer": "7"}, "g2", IMAGE)
    assert odd.answer == "7" and odd.meta["value"] == "7"


# ----------------------------------------------------------------------------- CLEVR, PathVQA, POPE, MMLU-Pro


def test_clevr_sample_from_the_published_problem_and_solution():
    row = {"problem": "How many cubes are there?", "solution": "<think>two red, one blue</think><answer> 3 </answer>"}
    sample = task("clevr").to_sample(row, "c1", IMAGE)
    assert sample.question == "How many cubes are there?"
    assert sample.answer == "3" and sample.answers == ["3"]
    assert sample.meta["rationale"] == "two red, one blue"
    assert task("clevr").score("three", sample) == 1.0


def test_pathvqa_records_whether_an_answer_is_yes_no_or_open():
    pathvqa = task("pathvqa")
    kinds = [pathvqa.to_sample({"question": "q", "answer": a}, "p", IMAGE).meta["answer_type"]
             for a in ("Yes", "no", "carcinoma")]
    assert kinds == ["yes/no", "yes/no", "open"]


def test_pope_reads_the_original_files_label_column_and_reports_through_the_task():
    pope = task("pope", benchmark=True)
    sample = pope.to_sample({"question_id": 1, "text": "Is there a dog in the image?", "label": "No"}, "1", IMAGE)
    assert sample.question == "Is there a dog in the image?" and sample.answer == "no" and sample.answers == ["no"]
    samples = [Sample(id=str(i), question="q", answer=a, meta={"category": c})
               for i, (a, c) in enumerate([("yes", "random"), ("no", "random"), ("yes", "popular")])]
    report = pope.summary(["Yes.", "No, there is not.", "no"], samples)
    assert report["pooled/accuracy"] == pytest.approx(2 / 3)
    assert report["random/accuracy"] == 1.0 and report["popular/recall"] == 0.0


def test_pope_reads_a_denial_before_a_comma():
    assert pope_yes_no("No, it is a cat.") == "no"
    assert pope_yes_no("Yes. It is not a cat.") == "yes"  # only the first sentence's words
    assert pope_yes_no("There is not.") == "no"


def test_mmlu_pro_sample_carries_its_reasoning_and_category():
    mmlu = task("mmlu_pro", benchmark=True)
    row = {"question_id": 70, "question": "What is 2 + 2?", "options": ["3", "4", "5"], "answer": "B",
           "answer_index": 1, "cot_content": "A: Let's think. 2 + 2 = 4.", "category": "math"}
    sample = mmlu.to_sample(row, "70", ())
    assert sample.answer == "B" and sample.meta["category"] == "math"
    assert "2 + 2 = 4" in mmlu.target(sample, cot=True)
    assert mmlu.to_sample({**row, "answer": None}, "70", ()).answer == "B", "the index when no letter"


# ----------------------------------------------------------------------------- scoring rules


def test_a_prompt_without_template_is_the_question_and_the_instruction():
    class Plain(Task):
        answer_instruction = "Answer briefly."

    sample = Sample(id="1", question="What colour is the sky?", answer="blue")
    assert Plain("plain").prompt(sample) == "What colour is the sky?\nAnswer briefly."


def test_numeric_match_is_absolute_below_one_and_relative_above():
    assert numeric_match("0.50009", "0.5") == 1.0
    assert numeric_match("0.50015", "0.5") == 0.0  # 1e-4 absolute under |gold| = 1
    assert numeric_match("1000.05", "1000") == 1.0  # 1e-4 relative above
    assert numeric_match("1000.2", "1000") == 0.0


def test_mmmu_reads_an_options_text_whatever_its_case():
    options = ["Paris", "London", "Rome", "Berlin"]
    question_id = "q1"
    assert random.Random(f"42/{question_id}").choice("ABCD") != "A", "the fallback draw would not pass"
    assert mmmu_choice("i am quite sure that the capital of france is paris", options, question_id) == "A"
