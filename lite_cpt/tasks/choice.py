"""Multiple choice: ScienceQA (a task of the sequence) and the MMMU and MMLU-Pro benchmarks.

The answer is an option letter; a prediction names it as `B`, `(B)`, `B. text`, the option's
own text, or MMLU-Pro's "the answer is (B)".
"""

from __future__ import annotations

import ast
import re
from typing import Any

from lite_cpt.errors import UserError
from lite_cpt.tasks.base import (
    Sample,
    choice_letter,
    exact_match,
    format_choices,
    parse_number,
    register_task,
)
from lite_cpt.tasks.real import SHORT_ANSWER, RealTask

LETTERS = "ABCDEFGHIJ"
_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-J])\b\)?", re.IGNORECASE)
_IMAGE_TAG = re.compile(r"<image (\d+)>")


def predicted_letter(prediction: str, choices: list[str] | None) -> str | None:
    """The option letter a prediction names, or None. Letters beyond the options don't count."""
    letter = choice_letter(prediction, choices)
    if letter is None:
        found = _ANSWER_IS.search(prediction)
        letter = found.group(1).upper() if found else None
    if letter is not None and choices is not None and LETTERS.index(letter) >= len(choices):
        return None
    return letter


def choice_question(question: str, choices: list[str], context: str | None = None) -> str:
    """`Context: ...` (when given), the question, and the options as `(A) ...` lines."""
    parts = [f"Context: {context.strip()}"] if context and context.strip() else []
    parts += [f"Question: {question.strip()}", "Options:", format_choices(choices)]
    return "\n".join(parts)


class ChoiceTask(RealTask):
    answer_instruction = "Answer with the option's letter from the given choices."

    def reward(self, prediction: str, sample: Sample) -> float:
        return 1.0 if predicted_letter(prediction, sample.choices) == sample.answer else 0.0


@register_task("scienceqa")
class ScienceQATask(ChoiceTask):
    """derek-thu/ScienceQA: image, question, choices, answer (index), hint, lecture, solution.
    Only the questions with an image are used (the image subset the VLM papers report)."""

    default_path = "scienceqa"
    default_hf_id = "derek-thu/ScienceQA"
    required_columns = ("image",)

    def to_sample(self, row: dict, sample_id: str, image: Any) -> Sample:
        choices = [str(c) for c in row["choices"]]
        return Sample(
            id=sample_id,
            question=choice_question(row["question"], choices, row.get("hint")),
            answer=LETTERS[int(row["answer"])],
            image=image,
            choices=choices,
            meta={"rationale": (row.get("solution") or "").strip(), "subject": row.get("subject")},
        )


def parse_options(options: Any, sample_id: str) -> list[str]:
    """MMMU stores options as the repr of a Python list (`"['$6', '$7']"`)."""
    if options is None or isinstance(options, list):
        return [str(o) for o in options or []]
    try:
        parsed = ast.literal_eval(options) if str(options).strip() else []
    except (ValueError, SyntaxError):
        raise UserError(f"sample {sample_id}: options {options!r} are not a list literal") from None
    if not isinstance(parsed, (list, tuple)):
        raise UserError(f"sample {sample_id}: options {options!r} are not a list")
    return [str(o) for o in parsed]


@register_task("mmmu", benchmark=True)
class MMMUTask(ChoiceTask):
    """MMMU/MMMU (one config per subject; without `hf_config` every subject is read): id,
    question with `<image i>` tags, options (a list literal), answer, image_1..image_7,
    question_type. The first image is shown; open questions are scored by number or text."""

    default_path = "mmmu"
    default_hf_id = "MMMU/MMMU"
    image_column = "image_1"
    id_column = "id"

    def to_sample(self, row: dict, sample_id: str, image: Any) -> Sample:
        choices = parse_options(row.get("options"), sample_id)
        question = _IMAGE_TAG.sub(lambda m: f"[image {m.group(1)}]", row["question"])
        answer = str(row["answer"]).strip()
        meta = {
            "rationale": row.get("explanation") or "",
            "question_type": row.get("question_type"),
            "subfield": row.get("subfield"),
        }
        if choices:
            return Sample(
                id=sample_id,
                question=choice_question(question, choices),
                answer=answer,
                image=image,
                choices=choices,
                meta=meta,
            )
        return Sample(
            id=sample_id, question=question.strip(), answer=answer, image=image, answers=[answer], meta=meta
        )

    def instruction(self, sample: Sample) -> str:
        return self.answer_instruction if sample.choices else SHORT_ANSWER

    def reward(self, prediction: str, sample: Sample) -> float:
        if sample.choices:
            return super().reward(prediction, sample)
        gold, pred = parse_number(sample.answer), parse_number(prediction)
        if gold is not None and pred is not None:  # MMMU's open-question rule: equal to 2 decimals
            return 1.0 if round(gold, 2) == round(pred, 2) else 0.0
        return exact_match(prediction, sample.answers or [sample.answer])


@register_task("mmlu_pro", benchmark=True)
class MMLUProTask(ChoiceTask):
    """TIGER-Lab/MMLU-Pro: question_id, question, options (up to 10), answer (letter),
    answer_index, cot_content, category. Text only."""

    default_path = "mmlu_pro"
    default_hf_id = "TIGER-Lab/MMLU-Pro"
    image_column = None
    id_column = "question_id"

    def to_sample(self, row: dict, sample_id: str, image: Any) -> Sample:
        choices = [str(o) for o in row["options"]]
        answer = str(row.get("answer") or LETTERS[int(row["answer_index"])]).strip()
        return Sample(
            id=sample_id,
            question=choice_question(row["question"], choices),
            answer=answer,
            image=None,
            choices=choices,
            meta={"rationale": row.get("cot_content") or "", "category": row.get("category")},
        )
