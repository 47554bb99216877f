"""Multiple choice: ScienceQA (a task of the sequence) and the MMMU and MMLU-Pro benchmarks.

ScienceQA and MMLU-Pro read the option letter with the shared extractor
(`lite_cpt.tasks.letters.choice_letter`); MMMU is graded by its official rules
(`lite_cpt.tasks.mmmu_scoring`), open questions included.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from lite_cpt.data.images import ImageRef, TableImage
from lite_cpt.data.loaders import SplitTable, table_arrow
from lite_cpt.data.quality import cell_text
from lite_cpt.data.sample import LETTERS
from lite_cpt.data.spec import DatasetSpec, hub_download
from lite_cpt.errors import UserError
from lite_cpt.tasks.base import BENCHMARK_TYPES, TASK_TYPES, Sample, format_choices
from lite_cpt.tasks.letters import choice_letter
from lite_cpt.tasks.mmmu_scoring import mmmu_choice, open_correct
from lite_cpt.tasks.real import SHORT_ANSWER, RealTask

CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices."
_IMAGE_TAG = re.compile(r"<image (\d+)>")


def choice_question(question: str, choices: list[str], context: str | None = None) -> str:
    """`Context: ...` (when given), the question, and the options as `(A) ...` lines."""
    parts = [f"Context: {context.strip()}"] if context and context.strip() else []
    parts += [f"Question: {question.strip()}", "Options:", format_choices(choices)]
    return "\n".join(parts)


class ChoiceTask(RealTask):
    answer_instruction = CHOICE_INSTRUCTION

    def reward(self, prediction: str, sample: Sample) -> float:
        return 1.0 if choice_letter(prediction, sample.choices) == sample.answer else 0.0


@TASK_TYPES.register
class ScienceQATask(ChoiceTask):
    """derek-thomas/ScienceQA: image (null for text-only questions), question, choices, answer
    (index), hint, task, grade, subject, topic, category, skill, lecture, solution. Only the
    questions with an image are used (the image subset the VLM papers report)."""

    type_name = "scienceqa"

    dataset = DatasetSpec(
        path="scienceqa", hf_id="derek-thomas/ScienceQA", train_split="train", test_split="test",
        download=hub_download("derek-thomas/ScienceQA"),
    )
    required_columns = ("image",)

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        choices = [str(c) for c in row["choices"]]
        return Sample(
            id=sample_id,
            question=choice_question(row["question"], choices, row.get("hint")),
            answer=_scienceqa_letter(row.get("answer"), choices),
            images=images,
            choices=choices,
            meta={"rationale": (row.get("solution") or "").strip(), "subject": row.get("subject")},
        )


def _scienceqa_letter(index: Any, choices: list[str]) -> str:
    """The letter of ScienceQA's answer index; '' (a missing answer, skipped) when it is null or
    names no option."""
    if index is None or not 0 <= int(index) < len(choices):
        return ""
    return LETTERS[int(index)]


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


def referenced_images(texts: list[str]) -> list[int]:
    """The k of every `<image k>` tag in the texts, each once, in increasing order (the order
    MMMU's evaluation passes the images in)."""
    return sorted({int(k) for text in texts for k in _IMAGE_TAG.findall(text or "")})


def _gold_answers(answer: str) -> list[str]:
    """An open question's gold answers: one string, or several written as a list literal."""
    text = answer.strip()
    if text.startswith("["):
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return [text]
        if isinstance(parsed, (list, tuple)):
            return [str(a) for a in parsed]
    return [text]


@BENCHMARK_TYPES.register
class MMMUTask(RealTask):
    """MMMU/MMMU (one config per subject, all read): id, question with `<image k>` tags,
    options (a list literal, may also hold tags), answer, image_1..image_7, question_type.
    Every referenced image is shown, in order of k; scoring follows MMMU's own evaluation."""

    type_name = "mmmu"

    dataset = DatasetSpec(
        path="mmmu", hf_id="MMMU/MMMU", train_split=None, test_split="validation",
        download=hub_download("MMMU/MMMU"),
    )
    image_columns = tuple(f"image_{k}" for k in range(1, 8))
    id_column = "id"

    def row_images(self, table: SplitTable, index: int, row: dict) -> tuple[ImageRef, ...]:
        ks = referenced_images([row.get("question"), str(row.get("options") or "")])
        arrow = table_arrow(table)
        if not ks:  # no tag: the first image, when the row has one
            ks = [1] if arrow.column("image_1")[index].is_valid else []
        return tuple(TableImage(arrow, index, f"image_{k}") for k in ks)

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        choices = parse_options(row.get("options"), sample_id)
        question = _IMAGE_TAG.sub(lambda m: f"[image {m.group(1)}]", row["question"])
        answer = cell_text(row.get("answer"))
        meta = {
            "rationale": row.get("explanation") or "",
            "question_type": row.get("question_type"),
            "subfield": row.get("subfield"),
        }
        if choices:
            shown = [_IMAGE_TAG.sub(lambda m: f"[image {m.group(1)}]", c) for c in choices]
            return Sample(id=sample_id, question=choice_question(question, shown), answer=answer,
                          images=images, choices=choices, meta=meta)
        return Sample(id=sample_id, question=question.strip(), answer=answer, images=images,
                      answers=_gold_answers(answer), meta=meta)

    def instruction(self, sample: Sample) -> str:
        return CHOICE_INSTRUCTION if sample.choices else SHORT_ANSWER

    def reward(self, prediction: str, sample: Sample) -> float:
        if sample.choices:
            return 1.0 if mmmu_choice(prediction, sample.choices, sample.id) == sample.answer else 0.0
        return 1.0 if open_correct(sample.answers or [sample.answer], prediction) else 0.0


@BENCHMARK_TYPES.register
class MMLUProTask(ChoiceTask):
    """TIGER-Lab/MMLU-Pro: question_id, question, options (up to 10), answer (letter),
    answer_index, cot_content, category, src. Text only."""

    type_name = "mmlu_pro"

    dataset = DatasetSpec(
        path="mmlu_pro", hf_id="TIGER-Lab/MMLU-Pro", train_split=None, test_split="test",
        download=hub_download("TIGER-Lab/MMLU-Pro"),
    )
    image_columns = ()
    id_column = "question_id"

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        choices = [str(o) for o in row["options"]]
        index = row.get("answer_index")
        answer = cell_text(row.get("answer")) or (LETTERS[int(index)] if index is not None else "")
        return Sample(
            id=sample_id,
            question=choice_question(row["question"], choices),
            answer=answer,
            choices=choices,
            meta={"rationale": row.get("cot_content") or "", "category": row.get("category")},
        )
