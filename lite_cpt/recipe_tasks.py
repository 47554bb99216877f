"""The recipe's task sections: where a task's data lives, and the fields every task or general
benchmark entry holds. A task type with settings of its own adds them from its module in
lite_cpt/tasks/ (`type: custom`: lite_cpt/tasks/custom_settings.py); lite_cpt.recipe_entries builds
the entry of each type."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, SerializeAsAny, WrapValidator, model_validator

from lite_cpt.prompt_fields import PromptFields
from lite_cpt.recipe_section import Section, entry_error, entry_model, refuse_foreign_keys


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


class TaskConfig(Section, PromptFields):
    """What every task entry holds, whatever its type."""

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

    @model_validator(mode="after")
    def _fill_source(self) -> "TaskConfig":
        object.__setattr__(self, "source", fill_source(self.source, self.type, benchmark=False))
        return self


class BenchmarkConfig(Section, PromptFields):
    """What every general benchmark entry holds, whatever its type."""

    name: str = Field(..., description="Benchmark name in the results.")
    type: str = Field(..., description="Benchmark type from the registry.")
    source: DataSourceConfig = Field(default_factory=DataSourceConfig, description="Data location.")
    size: int | None = Field(64, ge=1, description="Evaluation samples (None = all).")

    @model_validator(mode="after")
    def _fill_source(self) -> "BenchmarkConfig":
        object.__setattr__(self, "source", fill_source(self.source, self.type, benchmark=True))
        return self


class DataConfig(Section):
    root: str | None = Field(None, description="Directory that relative data paths resolve against.")


def _typed_entry(value: Any, handler, base: type[Section], benchmark: bool) -> Any:
    """A task (or benchmark) entry validated as its type's model: the fields every entry holds
    plus those its type declares (`settings`), refusing another type's."""
    if isinstance(value, base) or not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return handler(value)
    from lite_cpt.tasks import BENCHMARK_TYPES, TASK_TYPES

    registry = BENCHMARK_TYPES if benchmark else TASK_TYPES
    kind = value["type"]
    if kind not in registry:
        raise entry_error(base.__name__, [(("type",), registry.unknown(kind), kind)])
    model = entry_model(base, registry[kind].settings)
    owners = {name: cls.settings for name, cls in registry.items()}
    refuse_foreign_keys(value, model, f"a {'benchmark' if benchmark else 'task'} of type '{kind}'", owners)
    return model.model_validate(value)


def _task_entry(value: Any, handler) -> Any:
    return _typed_entry(value, handler, TaskConfig, benchmark=False)


def _benchmark_entry(value: Any, handler) -> Any:
    return _typed_entry(value, handler, BenchmarkConfig, benchmark=True)


#: A `tasks[]` entry: TaskConfig plus the fields of its `type` (lite_cpt/tasks/).
TaskEntry = Annotated[SerializeAsAny[TaskConfig], WrapValidator(_task_entry)]
#: An `evaluation.general[]` entry: BenchmarkConfig plus the fields of its `type`.
BenchmarkEntry = Annotated[SerializeAsAny[BenchmarkConfig], WrapValidator(_benchmark_entry)]


def task_config(**fields: Any) -> TaskConfig:
    """One task entry, validated as a recipe's is (`task_config(name="c", type="custom", custom={...})`)."""
    from pydantic import TypeAdapter

    return TypeAdapter(TaskEntry).validate_python(fields)


def benchmark_config(**fields: Any) -> BenchmarkConfig:
    """One general benchmark entry, validated as a recipe's is."""
    from pydantic import TypeAdapter

    return TypeAdapter(BenchmarkEntry).validate_python(fields)
