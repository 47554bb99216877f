"""Per-task reward options: which <answer> tag is read, binary vs soft VQA reward for RL."""

from __future__ import annotations

import pytest

from lite_cpt.recipe_tasks import TaskConfig
from lite_cpt.tasks import build_task
from lite_cpt.tasks.base import Sample, extract_answer

TWO_ANSWERS = "<think>maybe <answer>3</answer>, no</think><answer>4</answer>"


def test_first_or_last_answer_tag():
    assert extract_answer(TWO_ANSWERS) == "4"
    assert extract_answer(TWO_ANSWERS, "last") == "4"
    assert extract_answer(TWO_ANSWERS, "first") == "3"  # EasyR1's r1v reward: re.search
    assert extract_answer("no tags", "first") == "no tags"


@pytest.mark.parametrize("tag, expected", [("last", 1.0), ("first", 0.0)])
def test_a_task_reads_the_tag_its_recipe_names(tag, expected):
    task = build_task(TaskConfig(name="clevr", type="mini_clevr", answer_tag=tag))
    sample = Sample(id="0", question="How many?", answer="4")
    assert task.score(TWO_ANSWERS, sample, cot=True) == expected
    assert task.rl_score(TWO_ANSWERS, sample, cot=True) == expected


def vqa_sample() -> Sample:
    # ten human answers: 5 x blue (the majority), 3 x navy, 2 x teal
    answers = ["blue"] * 5 + ["navy"] * 3 + ["teal"] * 2
    return Sample(id="q1", question="What colour is the bus?", answer="blue", answers=answers)


@pytest.mark.parametrize("prediction, soft, binary", [
    ("blue", 1.0, 1.0),
    ("Blue.", 1.0, 1.0),  # VQA normalisation on both
    # navy: 3 annotators agree; the 3 leave-one-out sets without a navy voter give min(3/3, 1),
    # the 3 with one give 2/3 -> (7 * 1 + 3 * 2/3) / 10 = 0.9; not the majority answer -> 0
    ("navy", 0.9, 0.0),
    ("teal", (8 * 2 / 3 + 2 * 1 / 3) / 10, 0.0),
    ("green", 0.0, 0.0),
])
def test_vqa_rl_reward_is_soft_or_binary(prediction, soft, binary):
    sample = vqa_sample()
    metric = build_task(TaskConfig(name="textvqa", type="textvqa"))
    binary_task = build_task(TaskConfig(name="textvqa", type="textvqa", rl_reward="binary"))
    assert metric.rl_score(prediction, sample) == pytest.approx(soft)
    assert binary_task.rl_score(prediction, sample) == binary
    # evaluation keeps the official VQA accuracy whatever the RL reward is
    assert binary_task.score(prediction, sample) == pytest.approx(soft)


def test_binary_reward_of_a_right_or_wrong_task_is_its_metric():
    task = build_task(TaskConfig(name="gqa", type="gqa", rl_reward="binary"))
    sample = Sample(id="0", question="Which side?", answer="left", answers=["left"])
    assert task.rl_score("Left", sample) == task.score("Left", sample) == 1.0
    assert task.rl_score("right", sample) == task.score("right", sample) == 0.0
