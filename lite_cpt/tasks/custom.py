"""A task declared entirely in the recipe (`type: custom`): which columns hold the question,
the answer(s), the options and the images; the prompt templates; the metric from the registry
(`lite_cpt.tasks.scorers.METRICS`) or a reward function by import path.

It reads its data as the built-in real tasks do (`RealTask`: a local directory or file, or a hub
dataset from the cache, lazily referenced images, the seeded per-task sample), and turns one row
into a `Sample` the way the built-in type it resembles does, so that the same answers get the
same scores (tests/test_custom_tasks.py re-declares built-in tasks and compares).
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Any

from lite_cpt.data import loaders
from lite_cpt.data.images import FileImage, ImageRef, TableImage
from lite_cpt.data.loaders import SplitTable
from lite_cpt.data.location import DataLocation, resolve_location
from lite_cpt.data.quality import cell_text
from lite_cpt.data.sample import LETTERS, format_choices
from lite_cpt.errors import UserError
from lite_cpt.tasks.base import BENCHMARK_TYPES, COT_INSTRUCTION, TASK_TYPES, Sample, parse_number, solution_parts
from lite_cpt.tasks.choice import choice_question, parse_options
from lite_cpt.tasks.custom_settings import CustomFields, template_columns  # noqa: F401  (re-exported)
from lite_cpt.tasks.real import RealTask, search_dirs
from lite_cpt.tasks.scorers import METRICS, NUMBER_TOLERANCE, ScoreOptions, load_reward
from lite_cpt.tasks.vqa import majority_answer

def default_templates(instruction: str) -> tuple[str, str]:
    """(plain, chain-of-thought) prompts of a metric's instruction, as the built-in types build
    them: the question, then the instruction, then (CoT) the think/answer request."""
    if not instruction:
        return "{question}", "{question}\n" + COT_INSTRUCTION
    return f"{{question}}\n{instruction}", f"{{question}}\n{instruction} {COT_INSTRUCTION}"


@BENCHMARK_TYPES.register
@TASK_TYPES.register
class CustomTask(RealTask):
    """The task (or general benchmark) a recipe's `custom:` section describes (see
    `CustomTaskConfig` in the recipe)."""

    type_name = "custom"
    settings = CustomFields

    dataset = None  # no dataset of its own: the recipe's `source` says where the data is

    def __init__(self, name: str, config: Any = None, data_root=None, seed: int = 0):
        super().__init__(name, config=config, data_root=data_root, seed=seed)
        self.spec = config.custom
        self.image_columns = tuple(self.spec.columns.images)
        self.id_column = self.spec.columns.id
        self.required_columns = tuple(self.spec.required_columns)
        self.options = ScoreOptions(self.spec.normalize or "vqa", self.spec.tolerance or NUMBER_TOLERANCE)

    @cached_property
    def reward_function(self):
        return load_reward(self.spec.reward) if self.spec.reward else None

    @property
    def metric(self):
        return METRICS.get(self.spec.metric)

    # -- data ------------------------------------------------------------------------------
    def location(self) -> DataLocation:
        return resolve_location(self.config.source, self.data_root)

    def open(self, split: str) -> SplitTable:
        table = super().open(split)
        have = set(table.dataset.column_names)
        for key, column in self.named_columns():
            if column not in have:
                raise UserError(
                    f"task '{self.name}': custom.{key} names column '{column}', but {table.origin} "
                    f"(split '{table.split}') has no such column; its columns: {', '.join(sorted(have))}"
                )
        return table

    def named_columns(self) -> list[tuple[str, str]]:
        """(recipe key, column) of every column the recipe names."""
        columns = self.spec.columns
        named = [(f"columns.{role}", getattr(columns, role))
                 for role in ("question", "answer", "choices", "context", "rationale", "id")]
        named += [(f"columns.images[{i}]", c) for i, c in enumerate(columns.images)]
        named += [(f"columns.meta[{i}]", c) for i, c in enumerate(columns.meta)]
        named += [(f"required_columns[{i}]", c) for i, c in enumerate(self.spec.required_columns)]
        named += [(key, c) for key in ("prompt", "cot_prompt") for c in template_columns(getattr(self.spec, key))]
        return [(key, column) for key, column in named if column]

    def row_images(self, table: SplitTable, index: int, row: dict) -> tuple[ImageRef, ...]:
        """Each image column in order: an `Image` cell, every image of a list of them, a file
        name or a list of file names."""
        import pyarrow as pa

        refs: list[ImageRef] = []
        for column in self.image_columns:
            value = row.get(column)
            if column in row:
                names = value if isinstance(value, list) else [value] if value else []
                refs += [FileImage(str(name), search_dirs(table)) for name in names if name]
                continue
            cell = loaders.table_arrow(table).column(column)[index]
            if not cell.is_valid:
                continue
            count = len(cell) if isinstance(cell, pa.ListScalar) else 1  # a list of images, or one
            refs += [TableImage(loaders.table_arrow(table), index, column, item) for item in range(count)]
        return tuple(refs)

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        columns = self.spec.columns
        choices = parse_options(row.get(columns.choices), sample_id) if columns.choices else None
        question = str(row[columns.question]).strip()
        context = row.get(columns.context) if columns.context else None
        if choices:
            question = choice_question(question, choices, context)
        elif context and str(context).strip():
            question = f"Context: {str(context).strip()}\n{question}"
        answer, answers, rationale = self.reference(row[columns.answer], choices, sample_id)
        if columns.rationale and row.get(columns.rationale):
            rationale = str(row[columns.rationale]).strip()
        meta = {"rationale": rationale, **{c: row.get(c) for c in columns.meta}}
        meta["fields"] = {c: "" if row.get(c) is None else str(row[c]) for c in self.template_columns}
        return Sample(id=sample_id, question=question, answer=answer, images=images, answers=answers,
                      choices=choices, meta=meta)

    @cached_property
    def template_columns(self) -> list[str]:
        """The row columns the prompt templates name (kept per sample in `meta["fields"]`)."""
        return [c for key, c in self.named_columns() if key in ("prompt", "cot_prompt")]

    def reference(self, value: Any, choices: list[str] | None, sample_id: str) -> tuple[str, list[str] | None, str]:
        """(answer, accepted answers, rationale) of an answer cell: one value, a list of values, or
        VQA's [{answer: ...}] records; a `<think>…</think><answer>…</answer>` text gives its parts;
        with options, an index, a letter or an option's text gives the letter."""
        where = f"task '{self.name}', sample {sample_id}, column '{self.spec.columns.answer}'"
        if value is None or (isinstance(value, (list, tuple)) and not value):
            return "", [], ""  # no answer: `screen` skips the row and counts it
        if choices:
            return choice_letter_of(value, choices, where), None, ""
        rationale = ""
        if isinstance(value, (list, tuple)):
            answers = [cell_text(v.get("answer") if isinstance(v, dict) else v) for v in value]
            if not all(answers):
                return "", [], ""  # a null or empty answer among them: skipped as well
        else:
            rationale, answer = solution_parts(str(value))
            if not answer:
                return "", [], ""
            answers = [answer]
        self.check_answers(answers, where)
        return majority_answer(answers), answers, rationale

    def check_answers(self, answers: list[str], where: str) -> None:
        """Answers the metric could never match are a recipe error, not a silent zero."""
        if not answers:
            raise UserError(f"{where}: the list of answers is empty")
        if self.spec.metric == "yes_no" and any(a.lower() not in ("yes", "no") for a in answers):
            raise UserError(f"{where}: metric yes_no needs 'yes' or 'no' answers, got {answers}")
        if self.spec.metric == "number" and any(parse_number(a) is None for a in answers):
            raise UserError(f"{where}: metric number needs numeric answers, got {answers}")

    # -- prompt ----------------------------------------------------------------------------
    def prompt(self, sample: Sample, cot: bool = False) -> str:
        plain, chain = default_templates(self.metric.instruction if self.metric else "")
        if cot and self.spec.cot_prompt is None and self.spec.prompt is not None:
            chain = self.spec.prompt + " " + COT_INSTRUCTION  # the recipe's prompt, kept in CoT mode
        template = (self.spec.cot_prompt or chain) if cot else (self.spec.prompt or plain)
        fields = {"question": sample.question, "choices": format_choices(sample.choices or []),
                  **sample.meta.get("fields", {})}
        return template.format_map(fields)

    # -- scoring ---------------------------------------------------------------------------
    def reward(self, prediction: str, sample: Sample) -> float:
        if self.reward_function is None:
            return self.metric.score(prediction, sample, self.options)
        value = self.reward_function(prediction, sample)
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise UserError(f"task '{self.name}': reward {self.spec.reward} returned {value!r} for sample "
                            f"{sample.id}; it must return a finite number")
        return number

    def binary_reward(self, prediction: str, sample: Sample) -> float:
        if self.metric is not None and self.metric.binary is not None:
            return self.metric.binary(prediction, sample, self.options)
        return super().binary_reward(prediction, sample)


def choice_letter_of(value: Any, choices: list[str], where: str) -> str:
    """The option letter an answer cell gives: an index (int), a letter, or an option's text."""
    valid = LETTERS[: len(choices)]
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(choices):
            return valid[value]
        raise UserError(f"{where}: answer index {value} is outside the {len(choices)} options")
    text = str(value).strip()
    if len(text) == 1 and text.upper() in valid:
        return text.upper()
    if text in choices:
        return valid[choices.index(text)]
    raise UserError(f"{where}: answer {text!r} is neither an option letter ({valid}), an index nor an "
                    f"option's text ({choices})")
