"""What a task is: samples, a prompt, and one `reward` function that is also its metric.

A task type is a `Task` class that names itself (`type_name = "mini_clevr"`) and registers with
`@TASK_TYPES.register`; a recipe's `tasks[i].type` picks one. General benchmarks are
evaluation-only tasks in a second registry, `BENCHMARK_TYPES`. A type whose recipe entry takes
fields of its own declares them as `settings` (a pydantic model; `custom` does).
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Callable, ClassVar

from lite_cpt.data.sample import Sample, format_choices  # noqa: F401  (re-exported)
from lite_cpt.registry import Registry
from lite_cpt.tasks.letters import choice_letter  # noqa: F401  (re-exported)

from lite_cpt.tasks.prompts import COT_INSTRUCTION  # noqa: F401  (re-exported)
from lite_cpt.tasks.prompts import boxed_answer, boxed_format_reward, cot_format, task_prompt


class Task:
    """Base of every task type. Subclasses implement `load` and `reward` (and may change the
    prompt or the answer extraction); the rest is shared."""

    #: The name recipes give the type (`type:`), under which the class registers.
    type_name: ClassVar[str] = ""
    #: The fields the type adds to its recipe entry (a pydantic model), or None.
    settings: ClassVar[type | None] = None

    #: Instruction appended to the question in the plain (no chain-of-thought) prompt.
    answer_instruction = "Answer with a single word or number."

    def __init__(self, name: str, config: Any = None, data_root: Path | None = None, seed: int = 0):
        self.name = name
        self.config = config
        self.data_root = data_root
        self.seed = seed

    # -- data ------------------------------------------------------------------------------
    def load(self, split: str, size: int | None) -> list[Sample]:
        raise NotImplementedError

    # -- prompt ----------------------------------------------------------------------------
    def instruction(self, sample: Sample) -> str:
        """What form the answer takes (the `{instruction}` of a prompt template)."""
        return self.answer_instruction

    def prompt(self, sample: Sample, cot: bool = False) -> str:
        """The user text that follows the image: the recipe's template for the mode, else the
        question and the instruction (CoT: the think/answer request instead), see tasks.prompts."""
        return task_prompt(self.config, sample.question, self.instruction(sample), cot,
                                   cot_keeps_instruction=False)

    def target(self, sample: Sample, cot: bool = False) -> str:
        """The assistant text SFT trains on."""
        if cot:
            return f"<think>{sample.meta.get('rationale', '')}</think><answer>{sample.answer}</answer>"
        return sample.answer

    # -- scoring ---------------------------------------------------------------------------
    def extract_answer(self, prediction: str, cot: bool = False) -> str:
        if not cot:
            return prediction.strip()
        if cot_format(self.config) == "boxed":
            return boxed_answer(prediction)
        return extract_answer(prediction, getattr(self.config, "answer_tag", "last"))

    def format_reward(self, text: str) -> float:
        """1.0 when a chain-of-thought answer has the form the task's CoT prompt asks for."""
        if cot_format(self.config) == "boxed":
            return boxed_format_reward(text)
        return format_reward(text)

    def reward(self, prediction: str, sample: Sample) -> float:
        """Score in [0, 1] of an extracted answer; the task's evaluation metric too."""
        raise NotImplementedError

    def binary_reward(self, prediction: str, sample: Sample) -> float:
        """1.0 for full credit under `reward`, else 0.0 (the same thing for right/wrong metrics)."""
        return 1.0 if self.reward(prediction, sample) >= 1.0 else 0.0

    def score(self, prediction: str, sample: Sample, cot: bool = False) -> float:
        return float(self.reward(self.extract_answer(prediction, cot), sample))

    def summary(self, predictions: list[str], samples: list[Sample], cot: bool = False) -> dict[str, float]:
        """Benchmark-specific figures beside the mean score (e.g. POPE's F1 per category)."""
        return {}

    def rl_score(self, prediction: str, sample: Sample, cot: bool = False) -> float:
        """The accuracy part of the RL reward: `score`, or its binary form with `rl_reward: binary`."""
        if getattr(self.config, "rl_reward", "metric") == "binary":
            return float(self.binary_reward(self.extract_answer(prediction, cot), sample))
        return self.score(prediction, sample, cot)


#: Task types by name (`tasks[].type`), and the general benchmarks' (`evaluation.general[].type`):
#: each task class registers itself with `@TASK_TYPES.register` under its `type_name`.
TASK_TYPES: Registry[type[Task]] = Registry("task type", key="type_name")
BENCHMARK_TYPES: Registry[type[Task]] = Registry("benchmark type", key="type_name")


def build_task(config: Any, data_root: str | Path | None = None, seed: int = 0, *, benchmark: bool = False) -> Task:
    """Instantiate the task (or benchmark) a recipe section describes."""
    registry = BENCHMARK_TYPES if benchmark else TASK_TYPES
    root = Path(data_root) if data_root else None
    return registry.lookup(config.type)(config.name, config=config, data_root=root, seed=seed)


# ---------------------------------------------------------------------------------------------
# Answer normalisation shared by task types

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_THINK_ANSWER_FORMAT = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)


def extract_answer(text: str, tag: str = "last") -> str:
    """The content of the last (`tag="last"`) or first (`"first"`, as EasyR1's r1v reward reads
    it with re.search) <answer>…</answer>; the whole text when there is none."""
    found = _ANSWER_TAG.findall(text)
    if not found:
        return text.strip()
    if tag not in ("first", "last"):
        raise ValueError(f"answer tag must be 'first' or 'last', got {tag!r}")
    return (found[0] if tag == "first" else found[-1]).strip()


_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def solution_parts(solution: str) -> tuple[str, str]:
    """(rationale, answer) of an R1-style reference solution `<think>…</think><answer>…</answer>`:
    the think part ('' without one) and the last answer tag's content (the text without one)."""
    think = _THINK.search(solution)
    return (think.group(1).strip() if think else ""), extract_answer(solution)


def format_reward(text: str) -> float:
    """1.0 when the text is exactly `<think>…</think><answer>…</answer>`, else 0.0."""
    return 1.0 if _THINK_ANSWER_FORMAT.match(text) else 0.0


_ARTICLES = {"a", "an", "the"}


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the usual VQA-style cleanup)."""
    text = text.lower().strip()
    text = text.translate(str.maketrans({c: " " for c in string.punctuation}))
    return " ".join(word for word in text.split() if word not in _ARTICLES)


def exact_match(prediction: str, answers: list[str], normalize: Callable[[str], str] = normalize_text) -> float:
    """1.0 when the prediction equals one of the answers once both are normalised, else 0.0."""
    pred = normalize(prediction)
    return 1.0 if any(pred == normalize(a) for a in answers) else 0.0


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_number(text: str) -> float | None:
    """The first number in the text, or None."""
    found = _NUMBER.search(text.replace(",", ""))
    return float(found.group()) if found else None


def numeric_match(prediction: str, answer: str, rel_tol: float = 1e-4) -> float:
    pred, gold = parse_number(prediction), parse_number(answer)
    if pred is None or gold is None:
        return 0.0
    return 1.0 if abs(pred - gold) <= rel_tol * max(1.0, abs(gold)) else 0.0
