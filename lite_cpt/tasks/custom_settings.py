"""The settings `type: custom` adds to a task or benchmark entry: its `custom:` section (column
roles, prompt templates, metric or reward), declared here beside lite_cpt/tasks/custom.py."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from lite_cpt.recipe_section import Section

#: Placeholders every prompt template may use besides the row's own columns.
TEMPLATE_FIELDS = ("question", "choices")


def template_columns(template: str | None) -> list[str]:
    """The row columns a prompt template names (`{column}`), besides `{question}` / `{choices}`.
    Raises ValueError for a template str.format cannot fill (literal braces are `{{` `}}`)."""
    if not template:
        return []
    names = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(f"placeholder {{{field}}} is not a column name (write a literal brace as {{{{ or }}}})")
        if field not in TEMPLATE_FIELDS and field not in names:
            names.append(field)
    return names


METRIC_NAMES = ("exact", "vqa_accuracy", "choice", "math", "number", "yes_no")


class CustomColumns(Section):
    """Which columns of a `custom` task's rows hold what."""

    question: str = Field("question", description="Column holding the question text.")
    answer: str = Field(
        "answer", description="Column holding the answer: a value, a list of accepted answers, VQA's "
        "[{answer: ...}] records, or `<think>…</think><answer>…</answer>` (the tag's content is the answer, "
        "the think part the CoT target); with `choices`: an option index, letter or text.",
    )
    images: list[str] = Field(
        ["image"], description="Columns holding the images, in prompt order: an `Image` feature, a list of "
        "them, or file names (found beside the data, in images/ or <split>/); [] = text only.",
    )
    choices: str | None = Field(
        None, description="Column holding the options (a list, or its literal as a string); the question "
        "is shown with `(A) ...` option lines and the answer becomes a letter.",
    )
    context: str | None = Field(None, description="Column shown before the question as `Context: ...` when set.")
    rationale: str | None = Field(None, description="Column holding a worked solution (the CoT SFT target's think part).")
    id: str | None = Field(None, description="Column holding a stable sample id (else <task>/<split>/<row>).")
    meta: list[str] = Field(
        default_factory=list, description="Other columns copied into `sample.meta` (e.g. for a custom reward)."
    )


class CustomTaskConfig(Section):
    """A task declared in the recipe (`type: custom`): its columns, prompts and metric or reward.
    Its data comes from the task's `source` (a path or an hf_id is required)."""

    columns: CustomColumns = Field(default_factory=CustomColumns, description="Column roles.")
    metric: Literal[METRIC_NAMES] | None = Field(
        None, description="Scorer from the registry (each one a built-in task's): exact (PathVQA, GQA), "
        "vqa_accuracy (TextVQA, VizWiz), choice (ScienceQA), math (Geometry3K: EasyR1's mathruler grader), "
        "number (CLEVR), yes_no (POPE's reading, no default yes). Give metric or reward.",
    )
    reward: str | None = Field(
        None, description="Instead of a metric, a function `fn(prediction, sample) -> float` by import path, "
        "`package.module:function` or `path/to/file.py:function`; it is both the RL reward's accuracy "
        "part and the evaluation metric, and is checked when the recipe loads.",
    )
    normalize: Literal["vqa", "text", "lower", "none"] | None = Field(
        None, description="Answer normalisation of the exact and number metrics: vqa (official VQA cleanup, "
        "the default), text (lower case, no punctuation or articles), lower (lower case), none (strip only).",
    )
    tolerance: float | None = Field(
        None, ge=0, description="Relative tolerance of the number metric, |pred - gold| <= tol * max(1, |gold|); "
        "None = 1e-6.",
    )
    prompt: str | None = Field(
        None, description="Plain prompt template: `{question}` (with the option lines when there are choices), "
        "`{choices}`, or any `{column}` of the row; literal braces as {{ }}. None = the question, then the "
        "metric's instruction (e.g. `Answer with a number.`).",
    )
    cot_prompt: str | None = Field(
        None, description="Chain-of-thought prompt template (same placeholders); None = the plain default "
        "followed by the <think>/<answer> request.",
    )
    required_columns: list[str] = Field(
        default_factory=list, description="Rows where one of these columns is null are skipped (e.g. [image]).",
    )

    @field_validator("prompt", "cot_prompt")
    @classmethod
    def _template(cls, template: str | None) -> str | None:
        template_columns(template)
        return template

    @field_validator("reward")
    @classmethod
    def _reward(cls, path: str | None) -> str | None:
        if path is not None:
            from lite_cpt.tasks.scorers import load_reward

            load_reward(path)
        return path

    @model_validator(mode="after")
    def _one_scorer(self) -> "CustomTaskConfig":
        if (self.metric is None) == (self.reward is None):
            raise ValueError(f"give exactly one of metric ({', '.join(METRIC_NAMES)}) or reward "
                             "(package.module:function)")
        for option in ("normalize", "tolerance"):
            if getattr(self, option) is not None and option not in metric_options(self.metric):
                raise ValueError(f"{option} applies to the metrics {', '.join(metrics_reading(option))}, "
                                 f"not to {self.metric or 'a custom reward'}")
        return self


def metric_options(metric: str | None) -> tuple[str, ...]:
    from lite_cpt.tasks.scorers import METRICS

    return METRICS[metric].options if metric in METRICS else ()


def metrics_reading(option: str) -> list[str]:
    from lite_cpt.tasks.scorers import METRICS

    return [name for name, metric in METRICS.items() if option in metric.options]


class CustomFields(BaseModel):
    """What `type: custom` adds to a task or benchmark entry; its data location is required."""

    custom: CustomTaskConfig = Field(
        ..., description="Columns, prompts and metric of a `type: custom` task or benchmark (declared in the recipe)."
    )

    @model_validator(mode="after")
    def _custom_location(self):
        name = getattr(self, "name", "?")
        source = getattr(self, "source", None)
        if source is not None and source.path is None and source.hf_id is None:
            raise ValueError(f"'{name}' of type custom needs source.path or source.hf_id (where its data is)")
        for field in ("prompt", "cot_prompt"):
            if getattr(self, field, None) is not None:
                raise ValueError(f"'{name}': a custom task's prompts are custom.prompt and custom.cot_prompt")
        return self
