"""Answers cut at the length cap are counted, per task, in rollouts and in evaluation."""

from __future__ import annotations

import pytest

from lite_cpt.run.evaluate import EvalSet, score_items
from lite_cpt.train.phase import Example, Phase
from lite_cpt.recipe_run import GenerationConfig
from lite_cpt.train.rft import train_rft
from lite_cpt.train.rollout import StopTokens
from lite_cpt.tasks.base import Sample
from lite_cpt.train.truncation import cut_at_cap, task_end_extra
from tests.test_rft import KNOBS, VowelTask, arm_config, policy, tiny, vowel_examples  # noqa: F401

END = 7


def test_a_row_at_the_cap_without_its_end_of_turn_is_cut():
    rows = [[1, 2, 3], [1, 2, END], [1, END], [1, 2], [END, 2, 3]]
    assert cut_at_cap(rows, {END}, cap=3) == [True, False, False, False, False]


def _end_ids(processor) -> set[int]:
    return set(StopTokens.of(processor.tokenizer).end_ids)


def test_rollouts_cut_at_the_cap_are_logged_per_step_and_per_task(policy):
    model, processor = policy
    examples = vowel_examples(2) + [Example(VowelTask("other"), Sample(id="o", question="Say it.", answer="a"))]
    records: list[dict] = []
    seen: list = []
    original = train_rft.__globals__["generate_rollouts"]

    def recording(*args, **kwargs):
        rollouts = original(*args, **kwargs)
        seen.append(rollouts)
        return rollouts

    train_rft.__globals__["generate_rollouts"] = recording
    try:
        stats = train_rft(model, processor, examples, arm_config(max_new_tokens=2, prompts_per_step=3),
                          Phase(KNOBS, on_step=records.append), updates=2)
    finally:
        train_rft.__globals__["generate_rollouts"] = original
    ends = _end_ids(processor)
    counts: dict[str, list[int]] = {}
    for step, rollouts in zip(records, seen):
        cut = [len(ids) == 2 and not ends.intersection(ids) for ids in rollouts.token_ids]
        assert rollouts.truncated == cut
        assert step["truncated_fraction"] == pytest.approx(sum(cut) / len(cut))
        for row, flag in enumerate(cut):
            pair = counts.setdefault(rollouts.examples[row // rollouts.group_size].task.name, [0, 0])
            pair[0] += flag
            pair[1] += 1
    assert any(r["truncated_fraction"] > 0 for r in records), "two tokens cut the tiny model's answers"
    logged = task_end_extra(stats.extra)["truncated_rollouts"]
    assert logged == {task: cut / total for task, (cut, total) in counts.items()}
    assert set(logged) == {"vowel", "other"}


@pytest.mark.parametrize("cap", [1, 40])
def test_evaluation_answers_cut_at_the_cap_are_marked(policy, cap):
    model, processor = policy
    evalset = EvalSet(VowelTask("vowel"), [e.sample for e in vowel_examples(6)])
    items = score_items(model, processor, evalset, GenerationConfig(max_new_tokens=cap, batch_size=6))
    tokens = [processor.tokenizer(item["answer"], add_special_tokens=False)["input_ids"] for item in items]
    assert all(isinstance(item["truncated"], bool) for item in items)
    if cap == 1:
        # one token that is not the end of turn: every answer that says something was cut
        assert [item["truncated"] for item in items] == [bool(t) for t in tokens]
    assert all(not item["truncated"] for item in items if len(tokens[items.index(item)]) < cap - 1)
