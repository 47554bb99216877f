"""Rows in each dataset's published schema become the samples the tasks score, field by field;
and the scoring rules' edge cases (tolerances, case, commas) on hand-written answers."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from datasets import Dataset

from lite_cpt.data.images import FileImage
from lite_cpt.data.loaders import SplitTable
from lite_cpt.errors import UserError
from lite_cpt.recipe_tasks import BenchmarkConfig, TaskConfig
from lite_cpt.tasks import build_task
from lite_cpt.tasks.base import COT_INSTRUCTION, Sample, Task, numeric_match
from lite_cpt.tasks.mmmu_scoring import mmmu_choice, open_correct, parse_open
from lite_cpt.tasks.real import RealTask
from lite_cpt.tasks.vqa import pope_yes_no

IMAGE = (FileImage("diagram.png", ()),)


def task(type_name: str, benchmark: bool = False, **settings):
    config_type = BenchmarkConfig if benchmark else TaskConfig
    return build_task(config_type(name=type_name, type=type_name, **settings), None, 0, benchmark=benchmark)


def split_table(columns: dict, split: str) -> SplitTable:
    """A split holding `columns` (in the published schema), as the loaders open one."""
    dataset = Dataset.from_dict(columns)
    return SplitTable(dataset, range(len(dataset)), Path("."), "rows", split)


# ----------------------------------------------------------------------------- ScienceQA

SCIENCEQA_ROW = {"question": "Which of these states is farthest north?", "choices": ["Arizona", "Maine", "Ohio"],
                 "answer": 1, "hint": "", "task": "closed choice", "grade": "grade2", "subject": "social science",
                 "topic": "geography", "category": "Geography", "skill": "Read a map: cardinal directions",
                 "lecture": "Maps have four cardinal directions.", "solution": " Maine is farthest north. "}


def test_scienceqa_sample_has_lettered_options_its_hint_as_context_its_solution_and_subject():
    sample = task("scienceqa").to_sample(dict(SCIENCEQA_ROW), "sq1", IMAGE)
    assert sample.answer == "B" and sample.choices == ["Arizona", "Maine", "Ohio"] and sample.images == IMAGE
    assert sample.question == ("Question: Which of these states is farthest north?\nOptions:\n"
                               "(A) Arizona\n(B) Maine\n(C) Ohio")
    assert sample.meta == {"rationale": "Maine is farthest north.", "subject": "social science"}
    hinted = task("scienceqa").to_sample({**SCIENCEQA_ROW, "hint": "Figure: a map of the US. "}, "sq2", IMAGE)
    assert hinted.question.startswith("Context: Figure: a map of the US.\nQuestion: Which")
    assert task("scienceqa").score("(B) Maine", sample) == 1.0


def test_an_unknown_benchmark_type_lists_the_benchmark_types():
    with pytest.raises(UserError, match=r"unknown benchmark type 'textvqa'; allowed values: custom, .*mmmu, pope$"):
        task("textvqa", benchmark=True)


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


def test_a_real_task_without_an_instruction_prompts_the_question_alone():
    class Bare(RealTask):
        answer_instruction = ""

    sample = Sample(id="1", question="What colour is the sky?", answer="blue")
    assert Bare("bare").prompt(sample) == "What colour is the sky?"
    assert Bare("bare").prompt(sample, cot=True) == f"What colour is the sky?\n{COT_INSTRUCTION}"


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


# ----------------------------------------------------------------------------- MMMU, GQA, VizWiz rows


def test_mmmu_sample_keeps_its_type_and_subfield_and_invents_no_rationale():
    mmmu = task("mmmu", benchmark=True)
    row = {"id": "validation_Art_1", "question": "<image 1> Which is older?", "options": "['the fresco', 'the mosaic']",
           "answer": "B", "explanation": None, "question_type": "multiple-choice", "subfield": "Art History"}
    sample = mmmu.to_sample(row, "validation_Art_1", IMAGE)
    assert sample.choices == ["the fresco", "the mosaic"] and sample.answer == "B"
    assert sample.meta == {"rationale": "", "question_type": "multiple-choice", "subfield": "Art History"}
    assert mmmu.target(sample, cot=True) == "<think></think><answer>B</answer>"


def test_an_mmmu_question_without_image_tags_shows_its_first_image_when_it_has_one():
    mmmu = task("mmmu", benchmark=True)
    columns = {"id": ["validation_Art_1", "validation_Art_2"], "question": ["Which is older?", "Who painted it?"],
               "options": ["['the fresco', 'the mosaic']", "[]"], "answer": ["A", "Giotto"],
               "image_1": [b"\x89PNG", None]}
    table = split_table(columns, "validation")
    rows = [{k: v[i] for k, v in columns.items() if k != "image_1"} for i in range(2)]
    with_image, without = (mmmu.make_sample(table, i, row) for i, row in enumerate(rows))
    assert [(ref.row, ref.column) for ref in with_image.images] == [(0, "image_1")]
    assert without.images == () and without.answer == "Giotto" and not without.meta.get("unreadable")


def test_mmmu_open_answers_follow_the_official_parsing():
    # a one-letter gold answer is found at the end of a longer candidate (padded on one side)
    assert open_correct(["x"], "The answer is variable x")
    assert not open_correct(["x"], "The answer is xylophone")
    # the candidate is the shortest tail after an indicator, not any tail
    assert parse_open("So 12 is the total.") == ["the total"]
    # a tail that is only punctuation is no candidate: the whole answer is
    assert parse_open("The answer is '") == ["the answer is '"]


def test_gqa_rows_with_an_embedded_image_column_show_that_image():
    gqa = task("gqa")
    columns = {"id": ["201307251"], "imageId": ["n161313"], "question": ["What color is the car?"],
               "answer": ["red"], "fullAnswer": ["The car is red."], "image": [b"\x89PNG"]}
    table = split_table(columns, "testdev")
    row = {k: v[0] for k, v in columns.items() if k != "image"}
    sample = gqa.make_sample(table, 0, row)
    assert sample.id == "201307251" and sample.answer == "red"
    assert [(ref.row, ref.column) for ref in sample.images] == [(0, "image")]


def test_vizwiz_rows_without_a_question_id_or_image_file_are_named_by_split_and_row():
    vizwiz = task("vizwiz")
    columns = {"question": ["What is this?", "Which soup?"], "answers": [["soup"] * 10, ["tomato"] * 10],
               "category": ["other", "other"]}
    table = split_table(columns, "val")
    row = {k: v[1] for k, v in columns.items()}
    sample = vizwiz.make_sample(table, 1, row)
    assert sample.id == "vizwiz/val/1" and sample.answer == "tomato"
    named = vizwiz.make_sample(table, 0, {"image": "VizWiz_val_00000000.jpg", **row})
    assert named.id == "VizWiz_val_00000000.jpg"
