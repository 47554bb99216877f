"""Every prompt template is the recipe's to replace; the faithful recipe carries EasyR1's."""

import pytest

from lite_cpt.errors import UserError
from lite_cpt.train.phase import Example
from lite_cpt.recipe import load_recipe, recipe_from_dict
from lite_cpt.arms.rl.settings import RFTConfig
from lite_cpt.recipe_tasks import TaskConfig
from lite_cpt.train.rft import reward_parts
from lite_cpt.tasks.base import COT_INSTRUCTION, Sample, build_task

# The published format prompts of hiyouga/EasyR1 at 58a2c95 (2025-06-27), verbatim.
R1V_JINJA = ("{{ content | trim }} A conversation between User and Assistant. The user asks a question, and the "
             "Assistant solves it. The assistant first thinks about the reasoning process in the mind and then "
             "provides the user with the answer. The reasoning process and answer are enclosed within <think> "
             "</think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think>"
             "<answer> answer here </answer>")
MATH_JINJA = ("{{ content | trim }} You FIRST think about the reasoning process as an internal monologue and then "
              "provide the final answer. The reasoning process MUST BE enclosed within <think> </think> tags. "
              "The final answer MUST BE put in \\boxed{}.")

SAMPLE = Sample(id="s1", question="What colour is the bus?", answer="red", images=(), answers=["red"])


def _task(**config):
    return build_task(TaskConfig(name="t", type="textvqa", **config))


def test_a_built_in_tasks_prompts_are_replaced_from_the_recipe():
    own = _task()
    assert own.prompt(SAMPLE) == "What colour is the bus?\n" + own.answer_instruction
    assert own.prompt(SAMPLE, cot=True).endswith(COT_INSTRUCTION)
    task = _task(prompt="Q: {question} ({instruction})", cot_prompt="{question} Think, then <answer>.")
    assert task.prompt(SAMPLE) == f"Q: What colour is the bus? ({own.answer_instruction})"
    assert task.prompt(SAMPLE, cot=True) == "What colour is the bus? Think, then <answer>."
    # a direct prompt alone is kept in CoT mode, the think/answer request after it
    kept = _task(prompt="Q: {question}")
    assert kept.prompt(SAMPLE, cot=True) == f"Q: What colour is the bus? {COT_INSTRUCTION}"
    with pytest.raises(ValueError, match=r"unknown placeholder \{answer\}"):
        TaskConfig(name="t", type="textvqa", prompt="{question} {answer}")


def test_a_custom_tasks_prompt_is_kept_in_cot_mode(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    raw = {"name": "c", "tasks": [{"name": "c", "type": "custom", "source": {"path": str(tmp_path / "d")},
                                   "custom": {"columns": {"images": []}, "metric": "number",
                                              "prompt": "Sum: {question}"}}],
           "arms": [{"name": "rft"}]}
    task = build_task(recipe_from_dict(raw).tasks[0])
    assert task.prompt(SAMPLE) == "Sum: What colour is the bus?"
    assert task.prompt(SAMPLE, cot=True) == f"Sum: What colour is the bus? {COT_INSTRUCTION}"
    with pytest.raises(UserError, match="custom.prompt and custom.cot_prompt"):
        recipe_from_dict({**raw, "tasks": [{**raw["tasks"][0], "cot_prompt": "{question}"}]})


def test_the_faithful_recipe_asks_easyr1s_prompts_and_weighs_format_as_its_rewards_did():
    recipe = load_recipe("recipes/seven_tasks.yaml", check_data=False)
    sample = Sample(id="s", question="Find x.", answer="3", images=(), answers=["3"])
    for config in recipe.tasks:
        task = build_task(config)
        jinja, weight, fmt = (MATH_JINJA, 0.1, "boxed") if config.type == "geometry3k" else (R1V_JINJA, 0.5, "answer_tag")
        # `{{ content | trim }}`: the question as the loaders give it, trimmed
        assert task.prompt(sample, cot=True) == jinja.replace("{{ content | trim }}", "Find x."), config.name
        assert (config.format_weight, config.cot_format) == (weight, fmt), config.name
        if fmt == "answer_tag":
            assert config.answer_tag == "first", "r1v reads the first <answer> (re.search)"


@pytest.mark.parametrize("text, accuracy, fmt", [
    ("<think>x = 3 by symmetry</think> The answer is \\boxed{3}.", 1.0, 1.0),
    ("<think> a </think>\\boxed{4}", 0.0, 1.0),
    ("\\boxed{3}", 1.0, 0.0),  # no reasoning block: right, but not the asked form
    ("<think>a</think><answer>3</answer>", 0.0, 0.0),  # the r1v form is not the math one
    ("< think >a</ think > \\boxed{3}", 1.0, 1.0),  # EasyR1 removes spaces around < > /
])
def test_geometry_with_the_boxed_prompt_is_rewarded_as_easyr1s_math_reward(text, accuracy, fmt):
    recipe = load_recipe("recipes/seven_tasks.yaml", check_data=False)
    task = build_task(recipe.task("geometry3k"))
    sample = Sample(id="g", question="Find x.", answer="3", images=(), answers=["3"])
    reward, got_accuracy = reward_parts(Example(task, sample), text, RFTConfig(cot=True, format_weight=0.9))
    assert got_accuracy == accuracy
    assert reward == pytest.approx(0.9 * accuracy + 0.1 * fmt), "the task's weight 0.1 overrides the arm's"
