"""The recipe's task sections: where a task's data lives, a task or general benchmark, and a
task declared in the recipe itself (`type: custom`: its columns, prompts and metric or reward)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lite_cpt.prompt_fields import PromptFields
from lite_cpt.recipe_section import Section


class DataSourceConfig(Section):
    """Where a task's data lives. Every field defaults to the task type's own dataset (its hub id,
    directory and splits, stated once in the task class); set a field to override it. Synthetic
    tasks ignore the location."""

    path: str | None = Field(
        None, description="Local directory or file (parquet/json/jsonl/arrow), relative to data.root; "
        "default: the task type's directory."
    )
    hf_id: str | None = Field(
        None, description="Hugging Face dataset id, read from <data.root>/hub or the default hub cache; "
        "default: the task type's."
    )
    hf_config: str | None = Field(None, description="Dataset configuration name (may contain `{split}`).")
    train_split: str | None = Field(None, description="Split used for training; default: the task type's.")
    test_split: str | None = Field(None, description="Split used for evaluation; default: the task type's.")


def fill_source(source: DataSourceConfig, task_type: str, benchmark: bool) -> DataSourceConfig:
    """The source with unset fields taken from the task type's dataset. The location (path,
    hf_id, hf_config) is taken whole from the type unless the recipe gives a path or an hf_id."""
    from lite_cpt.tasks import BENCHMARK_TYPES, TASK_TYPES

    spec = getattr((BENCHMARK_TYPES if benchmark else TASK_TYPES).get(task_type), "dataset", None)
    defaults = spec.source() if spec is not None else {}
    given = source.model_dump(exclude_none=True)
    if "path" in given or "hf_id" in given:
        defaults = {k: v for k, v in defaults.items() if k not in ("path", "hf_id", "hf_config")}
    filled = {"train_split": "train", "test_split": "test", **defaults, **given}
    return DataSourceConfig(**filled)


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
        from lite_cpt.tasks.custom import template_columns

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


class TaskConfig(Section, PromptFields):
    name: str = Field(..., description="Unique task name (used in the matrix and run directory).")
    type: str = Field(..., description="Task type from the registry (`lite-cpt validate` lists them).")
    source: DataSourceConfig = Field(default_factory=DataSourceConfig, description="Data location.")
    train_size: int | None = Field(
        256, ge=1, description="Training rows: a sample drawn with the recipe seed, the same for every arm "
        "and every resume (None = the whole split)."
    )
    test_size: int | None = Field(64, ge=1, description="Evaluation samples (None = all).")
    epochs: float = Field(1.0, gt=0, description="Passes over the training set for this task.")
    multiple_choice: bool = Field(
        False, description="Show the options and score the letter, for task types whose rows carry "
        "options but are free-form by default (geometry3k)."
    )
    max_prompt_tokens: int = Field(
        1024, ge=8, description="Longest prompt, images' tokens included; a longer one is cut or dropped "
        "(overlong_prompts).",
    )
    overlong_prompts: Literal["cut", "drop"] = Field(
        "cut", description="A prompt over max_prompt_tokens: cut = keep its last tokens (never through an "
        "image; such a prompt stops the run); drop = leave the row out of training and evaluation, counted "
        "in the log (EasyR1's filter_overlong_prompts; lite_cpt/train/overlong.py).",
    )
    max_answer_tokens: int = Field(64, ge=1, description="Training answers are truncated to this length.")
    format_weight: float | None = Field(
        None, ge=0, le=1,
        description="Weight w of the format reward in this task's chain-of-thought RL reward, "
        "(1 - w) accuracy + w format (EasyR1: 0.5 in its r1v reward, 0.1 in its math reward); "
        "None = the arm's rft.format_weight.",
    )
    answer_tag: Literal["last", "first"] = Field(
        "last", description="Which <answer>…</answer> a chain-of-thought answer is read from "
        "(EasyR1's r1v reward: the first).",
    )
    rl_reward: Literal["metric", "binary"] = Field(
        "metric", description="Accuracy part of the RL reward: the evaluation metric itself (soft "
        "VQA accuracy for TextVQA/VizWiz), or binary (VQA: exact match with the majority answer; "
        "other tasks: full credit). Evaluation always uses the metric.",
    )

    custom: CustomTaskConfig | None = Field(
        None, description="Columns, prompts and metric of a `type: custom` task (a task declared in the recipe)."
    )

    @model_validator(mode="after")
    def _fill_source(self) -> "TaskConfig":
        check_custom_task(self)
        object.__setattr__(self, "source", fill_source(self.source, self.type, benchmark=False))
        return self


def check_custom_task(task: Any) -> None:
    """A `custom` section goes with `type: custom` (and back), which needs its data location
    (`task` is a TaskConfig or a BenchmarkConfig)."""
    if task.type != "custom":
        if task.custom is not None:
            raise ValueError(f"a `custom` section needs `type: custom` ('{task.name}' is {task.type})")
        return
    if task.custom is None:
        raise ValueError(f"'{task.name}' of type custom needs a `custom` section (columns, metric or reward)")
    if task.source.path is None and task.source.hf_id is None:
        raise ValueError(f"'{task.name}' of type custom needs source.path or source.hf_id (where its data is)")
    for field in ("prompt", "cot_prompt"):
        if getattr(task, field, None) is not None:
            raise ValueError(f"'{task.name}': a custom task's prompts are custom.prompt and custom.cot_prompt")


class BenchmarkConfig(Section, PromptFields):
    name: str = Field(..., description="Benchmark name in the results.")
    type: str = Field(..., description="Benchmark type from the registry.")
    source: DataSourceConfig = Field(default_factory=DataSourceConfig, description="Data location.")
    size: int | None = Field(64, ge=1, description="Evaluation samples (None = all).")
    custom: CustomTaskConfig | None = Field(
        None, description="Columns, prompts and metric of a `type: custom` benchmark (declared in the recipe, "
        "as a task's)."
    )

    @model_validator(mode="after")
    def _fill_source(self) -> "BenchmarkConfig":
        check_custom_task(self)
        object.__setattr__(self, "source", fill_source(self.source, self.type, benchmark=True))
        return self



class DataConfig(Section):
    root: str | None = Field(None, description="Directory that relative data paths resolve against.")
