"""Recipe schema: the one configuration surface of lite-cpt.

A recipe is a YAML file validated into `Recipe`. Every field is typed, defaulted and documented
(the `description` of each field is the reference docs/recipes.md prints). Unknown keys are errors.
Command-line overrides use dotted paths, `a.b=c`, parsed as YAML scalars; list items are addressed
by index, by name for tasks and arms, or all at once: `arms.sft.lr=1e-4`, `tasks.0.train_size=64`,
`tasks.*.test_size=100`.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from lite_cpt.errors import UserError
from lite_cpt.prompt_fields import EvalPrompt, PromptFields
from lite_cpt.recipe_section import Section
from lite_cpt.rl_settings import RFTConfig, RIFConfig
from lite_cpt.train.sft_schedule import ScheduleFields
from lite_cpt.unsloth_backend import import_unsloth_first, recipe_backend

class LoraConfig(Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: str = Field(
        "auto",
        description="Regex over module names that get adapters; `auto` = the model family's "
        "language-model linear layers (attention and MLP; the vision tower stays frozen).",
    )


class TinyModelConfig(Section):
    """Shape of the offline, randomly initialised model (of `model.family`) used when `model.name`
    is `tiny`."""

    hidden_size: int = Field(64, ge=16, description="Language model hidden size.")
    num_layers: int = Field(2, ge=1, description="Language model decoder layers.")
    num_heads: int = Field(4, ge=1, description="Attention heads (head_dim = hidden / heads).")
    num_kv_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention).")
    intermediate_size: int = Field(128, ge=16, description="MLP width of the language model.")
    vision_hidden_size: int = Field(32, ge=16, description="Vision tower hidden size.")
    vision_depth: int = Field(2, ge=1, description="Vision tower blocks.")
    vocab_size: int = Field(1024, ge=300, description="BPE vocabulary trained offline.")
    image_size: int = Field(56, ge=28, description="Side of the square images (multiple of 28).")
    seed: int = Field(0, description="Seed of the random initialisation and the tokenizer corpus.")


class BaseTrainingConfig(Section):
    """A short multi-task SFT that gives the random tiny model some ability before continual
    training starts (the 7B instruct model has it already). Cached by a hash of its inputs."""

    enabled: bool = Field(True, description="Train the shared base (only for `model.name: tiny`).")
    samples_per_task: int = Field(512, ge=1, description="Training samples per task (a separate split).")
    epochs: int = Field(6, ge=1, description="Passes over those samples.")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (full fine-tuning of the tiny model).")
    batch_size: int = Field(16, ge=1, description="Samples per step.")


class ModelConfig(Section):
    name: str = Field(
        "tiny",
        description="Hugging Face model id, a local directory, or `tiny` for the offline tiny model of "
        "`model.family`.",
    )
    family: str = Field(
        "auto",
        description="Model family adapter (`lite_cpt/families/`): auto = from the checkpoint's "
        "config.json model_type or the model id (tiny: qwen2_5_vl), or one of qwen2_5_vl, qwen3_vl, text.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Compute dtype; `auto` = bfloat16 on CUDA sm_80+, float16 + loss scaling below, float32 on CPU."
    )
    quantization: Literal["auto", "none", "nf4", "int8"] = Field(
        "auto", description="Frozen-base quantisation; `auto` = nf4 (QLoRA) on CUDA, none on CPU."
    )
    backend: Literal["transformers", "unsloth"] = Field(
        "transformers", description="Model loader; `unsloth` is an optional CUDA fast path."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward (non-reentrant).")
    logprob_chunk: int | Literal["auto"] = Field(
        "auto", description="Vocabulary rows per chunk of the fused log-prob; auto = planner (CPU: kernel default)."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="Attention kernel passed to transformers."
    )
    min_pixels: int | None = Field(None, ge=1, description="Processor min_pixels (image resolution floor).")
    max_pixels: int | None = Field(None, ge=1, description="Processor max_pixels (caps image tokens).")
    vision_cache_gb: float = Field(
        4.0, ge=0, description="Bound of the per-task cache of vision features (each image through the frozen "
        "tower once; the oldest entries wait on the CPU); 0 = off; off anyway when LoRA targets the tower.",
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapter settings.")
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Tiny model shape.")
    base_training: BaseTrainingConfig = Field(
        default_factory=BaseTrainingConfig, description="Shared base training for the tiny model."
    )

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str) -> str:
        from lite_cpt.families import FAMILIES

        if value != "auto" and value not in FAMILIES:
            raise ValueError(f"unknown model family '{value}'; allowed: auto, {', '.join(FAMILIES)}")
        return value


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
    max_prompt_tokens: int = Field(1024, ge=8, description="Prompts are truncated (left) to this length.")
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


class ReplayConfig(Section):
    fraction: float = Field(0.2, ge=0, le=1, description="Share of each batch drawn from earlier tasks.")
    buffer_per_task: int = Field(64, ge=1, description="Samples kept per finished task.")


class EWCConfig(Section):
    weight: float = Field(100.0, ge=0, description="EWC penalty coefficient (lambda).")
    fisher_samples: int = Field(32, ge=1, description="Samples used to estimate the diagonal Fisher.")


class ArmConfig(Section, ScheduleFields):
    name: str = Field(..., description="Arm name (directory under the run).")
    method: str | None = Field(
        None, description="Training method (`lite-cpt arms` lists them); defaults to the arm's name "
        "when that is a method."
    )
    lr: float = Field(2e-4, gt=0, description="LoRA learning rate (AdamW).")
    weight_decay: float | None = Field(
        None, ge=0, description="AdamW weight decay; None = the method's default: 1e-2 for RL arms "
        "(EasyR1), 0 for SFT arms (LLaMA-Factory).",
    )
    batch_size: int = Field(8, ge=1, description="SFT samples per optimizer step.")
    micro_batch_size: int | Literal["auto"] = Field(
        "auto", description="Samples per forward pass (gradient accumulation fills the batch), sized for the "
        "longest sequences; auto = planner."
    )
    micro_batch_tokens: int | Literal["auto", "off"] = Field(
        "auto", description="Token budget of one micro-batch of the update (SFT samples, GRPO rollouts): "
        "sequences of their real length are packed, longest first, while sequences x padded length stays "
        "within it (up to as many sequences as the planner finds fit); auto = micro_batch_size x the "
        "longest sequence on a GPU, the whole batch on a CPU; off = a fixed count of micro_batch_size. "
        "Gradients are the same either way.",
    )
    max_steps_per_task: int | None = Field(None, ge=1, description="Cap on optimizer steps per task.")
    grad_clip: float = Field(1.0, gt=0, description="Gradient-norm clip.")
    eval_prompt: EvalPrompt | None = Field(
        None, description="This arm's evaluation prompt (trained, cot, direct); None = evaluation.prompt.",
    )
    rft: RFTConfig = Field(default_factory=RFTConfig, description="GRPO settings.")
    rif: RIFConfig = Field(default_factory=RIFConfig, description="Instance filtering settings.")
    replay: ReplayConfig = Field(default_factory=ReplayConfig, description="Replay settings.")
    ewc: EWCConfig = Field(default_factory=EWCConfig, description="EWC settings.")

    @field_validator("micro_batch_tokens")
    @classmethod
    def _positive_budget(cls, budget: int | str) -> int | str:
        if isinstance(budget, int) and budget < 1:
            raise ValueError(f"micro_batch_tokens must be a positive token count, auto or off (got {budget})")
        return budget

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str | None) -> str | None:
        methods = arm_methods()
        if method is not None and method not in methods:
            raise ValueError(f"unknown arm method '{method}'; allowed values: {', '.join(methods)}")
        return method

    @model_validator(mode="after")
    def _method(self) -> "ArmConfig":
        if self.method is None:
            methods = arm_methods()
            if self.name not in methods:
                raise ValueError(f"arm '{self.name}' needs a `method` (one of: {', '.join(methods)})")
            object.__setattr__(self, "method", self.name)
        if self.lr_scheduler != "constant" or self.warmup_ratio:
            from lite_cpt.arms import ARMS

            if ARMS[self.method].kind != "sft":
                raise ValueError(f"arm '{self.name}': lr_scheduler and warmup_ratio apply to SFT arms "
                                 "(RL arms keep EasyR1's constant rate)")
        return self


def arm_methods() -> tuple[str, ...]:
    """The method names of the arm registry, read without importing it (the arm modules load
    torch and transformers, which reading a recipe does not otherwise need)."""
    from lite_cpt.arms_declared import arm_method_names

    return arm_method_names()


class GenerationConfig(Section):
    max_new_tokens: int = Field(32, ge=1, description="Longest generated answer at evaluation.")
    temperature: float = Field(0.0, ge=0, description="0 = greedy decoding (the default for every row).")
    repetition_penalty: float = Field(
        1.0, gt=0, description="Repetition penalty; 1.0 = off (never taken from the checkpoint's generation_config)."
    )
    batch_size: int | Literal["auto"] = Field(
        "auto", description="Prompts per evaluation generate call; auto = the planner's choice: the most, up to 64, "
        "whose KV cache for max_new_tokens fits the GPU (64 on CPU).",
    )

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, value: int | str) -> int | str:
        if value != "auto" and value < 1:
            raise ValueError("batch_size must be a positive integer or auto")
        return value


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


class EvaluationConfig(Section):
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Decoding settings.")
    general: list[BenchmarkConfig] = Field(
        default_factory=list, description="General benchmarks evaluated after every task."
    )
    prompt: EvalPrompt = Field(
        "trained", description="Evaluation prompt of every arm (an arm's eval_prompt overrides it): trained = "
        "the format the arm trained with (SFT arms: direct answers; RL arms: their rft.cot), cot = the "
        "chain-of-thought prompt for all, direct = the direct-answer prompt for all.",
    )


class DataConfig(Section):
    root: str | None = Field(None, description="Directory that relative data paths resolve against.")


class LoggingConfig(Section):
    tensorboard: bool = Field(False, description="Write step and task-end records as TensorBoard event files "
                              "under <run>/tensorboard/ (needs `pip install -e .[tracking]`).")
    wandb: bool = Field(False, description="Log to Weights & Biases (needs `wandb` installed).")
    wandb_project: str = Field("lite-cpt", description="W&B project name.")
    wandb_mode: Literal["offline", "online"] = Field(
        "offline", description="offline: write under <run>/wandb/ for a later `wandb sync`; online: upload."
    )
    mlflow: bool = Field(False, description="Log to MLflow (needs `mlflow` installed).")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; None = a local SQLite store, <run>/mlflow.db."
    )


class CheckpointConfig(Section):
    """Mid-phase checkpoints: a phase interrupted after hours resumes at its last saved update."""

    every_updates: int | None = Field(
        50, ge=1, description="Checkpoint a training phase every this many policy updates (SFT steps, GRPO "
        "rollout batches); None = no count-based checkpoints."
    )
    every_minutes: float | None = Field(
        30.0, gt=0, description="...and whenever this many minutes passed since the last one; None = no "
        "time-based checkpoints. A SIGTERM / SIGINT always writes one."
    )
    keep: int = Field(
        2, ge=1, description="Checkpoints kept per phase (a damaged newest one falls back to the one before)."
    )


class FaultsConfig(Section):
    """How much the run tolerates before it stops with a message."""

    max_consecutive_nonfinite: int = Field(
        3, ge=1, description="Consecutive updates with a non-finite loss or gradient (each skipped, nothing "
        "stepped) that stop the phase."
    )
    max_adapter_weight: float = Field(
        1e4, gt=0, description="Largest |weight| the adapter may reach after an update; beyond it (or at a "
        "non-finite weight) training has diverged and the phase stops with the step and the knobs."
    )
    max_bad_data_fraction: float = Field(
        0.05, ge=0, le=1, description="Share of a split's items that may be unusable (image that will not "
        "decode or is missing, empty question, missing answer; each skipped and counted) before the "
        "preflight fails."
    )


class RolloutConfig(Section):
    """Which engine generates GRPO rollouts (docs/rollouts.md)."""

    backend: Literal["hf", "vllm"] = Field(
        "hf", description="hf = transformers generate, static calls of balanced size (each decodes to its longest "
        "answer); vllm = vLLM in the same process, continuous batching (a finished answer's slot is refilled at "
        "once), the current LoRA pushed after each update (needs `pip install 'lite-cpt[vllm]'`).",
    )
    gpu_memory_utilization: float = Field(
        0.3, gt=0, lt=1, description="vllm: share of the GPU's memory vLLM may hold (weights and KV cache); "
        "released while the policy trains (sleep mode).",
    )
    cpu_kv_cache_gb: int = Field(2, ge=1, description="vllm on CPU: KV cache size in GB (VLLM_CPU_KVCACHE_SPACE).")
    max_num_seqs: int = Field(256, ge=1, description="vllm: the most sequences decoded at once.")


class Recipe(Section):
    name: str = Field(..., description="Run name; outputs go to <output_dir>/<name>/.")
    seed: int = Field(0, description="Seed of data sampling (train and test draws), adapter initialisation, "
                      "training and rollouts; the tiny base follows `model.tiny.seed` instead.")
    seeds: list[int] | None = Field(
        None, description="Seeds to run, each into <run>/seed_<k>/ (`lite-cpt run --seeds 0,1,2`); "
        "None = [seed]. The report gives mean and 95 % t-interval across seeds."
    )
    output_dir: str = Field("runs", description="Parent directory of run directories.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model and adapters.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data locations.")
    tasks: list[TaskConfig] = Field(..., min_length=1, description="Tasks, in training order.")
    arms: list[ArmConfig] = Field(..., min_length=1, description="Training arms, each from a fresh adapter.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Evaluation.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Optional experiment trackers.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Mid-phase checkpoints.")
    faults: FaultsConfig = Field(default_factory=FaultsConfig, description="Tolerance of numerical and data faults.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="The engine that generates rollouts.")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None:
            if not seeds:
                raise ValueError("give at least one seed, e.g. seeds: [0, 1, 2], or leave it out")
            _check_unique([str(s) for s in seeds], "seed")
        return seeds

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, tasks: list[TaskConfig]) -> list[TaskConfig]:
        _check_unique([t.name for t in tasks], "task")
        return tasks

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, arms: list[ArmConfig]) -> list[ArmConfig]:
        _check_unique([a.name for a in arms], "arm")
        return arms

    @model_validator(mode="after")
    def _tis_needs_a_sampler(self) -> "Recipe":
        if self.rollout.backend == "hf":
            for arm in self.arms:
                if arm.rft.tis_cap is not None:
                    raise ValueError(f"arms[{arm.name}].rft.tis_cap corrects for a rollout engine other than the "
                                     "trainer; with rollout.backend: hf the trainer samples: set rollout.backend: "
                                     "vllm or remove tis_cap")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def run_seeds(self) -> list[int]:
        """The seeds this recipe runs: `seeds`, or just `seed`."""
        return list(self.seeds) if self.seeds is not None else [self.seed]

    def task(self, name: str) -> TaskConfig:
        return next(t for t in self.tasks if t.name == name)


def _check_unique(names: list[str], what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} name '{name}' appears twice")
        seen.add(name)


# ---------------------------------------------------------------------------------------------
# Loading, overrides, validation messages


def resolve_recipe_path(path: str | Path) -> Path:
    """A recipe path as given, or else the copy shipped inside the package (`recipes/...`)."""
    path = Path(path)
    if path.exists():
        return path
    parts = path.parts
    if parts and parts[0] == "recipes":
        shipped = resources.files("lite_cpt.recipes").joinpath(*parts[1:])
        if shipped.is_file():
            return Path(str(shipped))
    raise UserError(f"recipe file not found: {path}")


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key.path=value")
        key, value = item.split("=", 1)
        if not key:
            raise UserError(f"override '{item}' has an empty key")
        parsed.append((key.split("."), yaml.safe_load(value) if value != "" else None))
    return parsed


def apply_override(raw: dict, path: list[str], value: Any) -> None:
    """Set `value` at a dotted path in the raw recipe mapping.

    List items are found by index (`tasks.0`), by their `name` (`arms.sft`), or all at once
    (`tasks.*.train_size=4`). Missing mapping keys are created so that pydantic reports unknown
    ones with their full path.
    """
    node: Any = raw
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        where = ".".join(path[: depth + 1])
        if isinstance(node, list) and key == "*":
            for index in range(len(node)):
                apply_override(node, [str(index), *path[depth + 1 :]], copy.deepcopy(value))
            return
        if isinstance(node, list):
            index = _list_index(node, key, where)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last and depth == 0 and key == "model" and isinstance(value, str):
                # `model=tiny` / `model=Qwen/...` is shorthand for model.name, keeping the rest.
                node["model"] = {**(node.get("model") or {}), "name": value}
            elif last:
                node[key] = value
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        else:
            raise UserError(f"override '{'.'.join(path)}': '{'.'.join(path[:depth])}' is not a section")


def _list_index(items: list, key: str, where: str) -> int:
    if key.lstrip("-").isdigit():
        index = int(key)
        if -len(items) <= index < len(items):
            return index
        raise UserError(f"override '{where}': index out of range (list has {len(items)} items)")
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return index
    names = [str(item.get("name")) for item in items if isinstance(item, dict)]
    raise UserError(f"override '{where}': no item named '{key}' (have: {', '.join(names)})")


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names allowed at `loc` (the location pydantic reports, minus the bad key)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part)
        if field is None:
            return None
        current = _section_type(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _section_type(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if args:
        for arg in args:
            found = _section_type(arg)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
    return annotation


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid recipe {source}:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(Recipe, loc[:-1])
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {where}: unknown key{hint}")
        elif item["type"] == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            lines.append(f"  {where}: got {item.get('input')!r}; allowed values: {expected}")
        elif item["type"] == "missing":
            lines.append(f"  {where}: required key is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def recipe_from_dict(raw: dict, source: str = "<dict>") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as error:
        raise UserError(format_validation_error(error, source)) from None


def read_recipe_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The raw mapping of a recipe file, with `extends: other.yaml` resolved.

    Top-level keys starting with `x-` are dropped (they hold YAML anchors for the rest to merge).
    An extending recipe is deep-merged over its parent (mappings merge key by key; lists and
    scalars replace), so an ablation states only what it changes.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise UserError(f"recipe {path} must be a YAML mapping at the top level")
    # Top-level `x-...` keys only hold YAML anchors (`x-r1v: &r1v {...}`) that tasks merge in.
    raw = {key: value for key, value in raw.items() if not str(key).startswith("x-")}
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in _seen:
        raise UserError(f"recipe {path}: `extends` forms a cycle through {parent_path}")
    if not parent_path.exists():
        raise UserError(f"recipe {path}: extends {parent}, but {parent_path} does not exist")
    return deep_merge(read_recipe_yaml(parent_path, _seen + (parent_path,)), raw)


def expand_arm_defaults(raw: dict) -> dict:
    """`arm_defaults:` is merged under every arm, and `task_defaults:` under every task, so
    each states only what sets it apart (and a recipe that extends another changes a setting
    of every task or arm in one line)."""
    for key, items, what in (("arm_defaults", "arms", "arm"), ("task_defaults", "tasks", "task")):
        defaults = raw.pop(key, None)
        if defaults is None:
            continue
        if not isinstance(defaults, dict):
            raise UserError(f"{key} must be a mapping of {what} settings")
        if isinstance(raw.get(items), list):
            raw[items] = [deep_merge(defaults, item) if isinstance(item, dict) else item for item in raw[items]]
    return raw


def deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_recipe(path: str | Path, overrides: list[str] | None = None, *, check_data: bool = True) -> Recipe:
    """Read a YAML recipe, apply `a.b=c` overrides, validate, check task types and data paths."""
    path = resolve_recipe_path(path)
    raw = read_recipe_yaml(path)
    for keys, value in parse_overrides(overrides or []):
        apply_override(raw, keys, value)
    import_unsloth_first(recipe_backend(raw))  # before validation imports transformers
    raw = expand_arm_defaults(raw)
    recipe = recipe_from_dict(raw, str(path))
    check_recipe_references(recipe, check_data=check_data)
    return recipe


def check_recipe_references(recipe: Recipe, check_data: bool = True) -> None:
    """Task and benchmark types must be registered and local data paths must exist (checked
    here so that `validate` catches them before a run starts)."""
    from lite_cpt.tasks import BENCHMARK_TYPES, TASK_TYPES

    problems = []
    for index, task in enumerate(recipe.tasks):
        if task.type not in TASK_TYPES:
            problems.append(
                f"  tasks.{index}.type: unknown task type '{task.type}'; allowed values: "
                f"{', '.join(sorted(TASK_TYPES))}"
            )
    for index, bench in enumerate(recipe.evaluation.general):
        if bench.type not in BENCHMARK_TYPES:
            problems.append(
                f"  evaluation.general.{index}.type: unknown benchmark type '{bench.type}'; "
                f"allowed values: {', '.join(sorted(BENCHMARK_TYPES))}"
            )
    if check_data and not problems:
        from lite_cpt.data.check import check_sources

        problems += [f"  {problem}" for problem in check_sources(recipe)]
    if problems:
        raise UserError("invalid recipe:\n" + "\n".join(problems))


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def config_hash(obj: Any) -> str:
    """Stable short hash of a pydantic model / JSON-able value (cache keys)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    payload = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]
