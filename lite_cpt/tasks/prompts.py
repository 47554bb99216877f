"""Prompt templates of every task, replaceable from the recipe, and the answer format they ask for.

Each task and general benchmark of a recipe takes

    prompt      the direct-answer prompt (what SFT trains on and a direct evaluation asks)
    cot_prompt  the chain-of-thought prompt (RL rollouts, CoT evaluation)
    cot_format  what that chain-of-thought prompt asks the answer to look like:
                answer_tag  <think>…</think><answer>…</answer> (EasyR1's r1v reward)
                boxed       <think>…</think> … \\boxed{…}        (EasyR1's math reward)

Templates are Python format strings with `{question}` (the sample's question, with its option
lines when it has options) and `{instruction}` (the task's answer-form instruction, e.g. `Answer
with a number.`); a literal brace is written `{{` / `}}`. Left unset, a task builds its own
prompt (the question, then its instruction; in CoT mode the think/answer request after it). A
`prompt` given without a `cot_prompt` is kept in CoT mode: the think/answer request follows it
(after a space, as a built-in task's follows its instruction).

EasyR1's format prompts of the paper's period (hiyouga/EasyR1 58a2c95, 2025-06-27,
`examples/format_prompt/r1v.jinja` and `math.jinja`, each `{{ content | trim }}` then the text)
are `R1V_PROMPT` and `MATH_PROMPT`; `recipes/seven_tasks.yaml` uses them.
"""

from __future__ import annotations

import re
import string
from typing import Any

from mathruler.grader import extract_boxed_content

COT_INSTRUCTION = (
    "First think step by step inside <think> </think>, "
    "then give the final answer inside <answer> </answer>."
)

#: examples/format_prompt/r1v.jinja at EasyR1 58a2c95 (the R1-V prompt, VQA-style tasks).
R1V_PROMPT = (
    "{question} A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then provides the "
    "user with the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think><answer> answer "
    "here </answer>"
)

#: examples/format_prompt/math.jinja at EasyR1 58a2c95 (Geometry3K).
MATH_PROMPT = (
    "{question} You FIRST think about the reasoning process as an internal monologue and then provide the "
    "final answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer "
    "MUST BE put in \\boxed{{}}."
)

TEMPLATE_FIELDS = ("question", "instruction")
COT_FORMATS = ("answer_tag", "boxed")

# EasyR1's math format reward: spaces around < > / removed, then this must match the whole text.
_BOXED_FORMAT = re.compile(r"<think>.*</think>.*\\boxed\{.*\}.*", re.DOTALL)
_TAG_SPACES = re.compile(r"\s*(<|>|/)\s*")


def check_template(template: str | None) -> str | None:
    """A template whose placeholders are all known; else a ValueError naming the bad one."""
    if template is None:
        return None
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as error:
        raise ValueError(f"prompt template is not a valid format string ({error}); write a literal brace "
                         "as {{ or }}") from None
    for field in fields:
        if field not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown placeholder {{{field}}} in a prompt template; allowed: "
                             f"{', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)} (a literal brace: {{{{ }}}})")
    return template


def task_prompt(config: Any, question: str, instruction: str, cot: bool, *, cot_keeps_instruction: bool) -> str:
    """The user text of a sample: the recipe's template for the mode when it gives one, else the
    task's own prompt (question, instruction; in CoT mode the think/answer request, after the
    instruction when `cot_keeps_instruction`)."""
    plain, chain = getattr(config, "prompt", None), getattr(config, "cot_prompt", None)
    if cot and chain is not None:
        return chain.format(question=question, instruction=instruction)
    if plain is not None:
        text = plain.format(question=question, instruction=instruction)
        return f"{text} {COT_INSTRUCTION}" if cot else text
    if cot:
        suffix = f"{instruction} {COT_INSTRUCTION}" if instruction and cot_keeps_instruction else COT_INSTRUCTION
    else:
        suffix = instruction
    return f"{question}\n{suffix}" if suffix else question


def cot_format(config: Any) -> str:
    return getattr(config, "cot_format", None) or "answer_tag"


def boxed_format_reward(text: str) -> float:
    """EasyR1's math format reward (examples/reward_function/math.py at 58a2c95)."""
    return 1.0 if _BOXED_FORMAT.fullmatch(_TAG_SPACES.sub(r"\1", text)) else 0.0


def boxed_answer(text: str) -> str:
    """The answer of a `\\boxed{}` response, as EasyR1's math reward reads it (the last box)."""
    text = _TAG_SPACES.sub(r"\1", text)
    boxed = extract_boxed_content(text) if "\\boxed" in text else "None"
    return text.strip() if boxed == "None" else boxed
