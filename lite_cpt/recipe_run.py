"""The recipe's arm and run sections: the fields every arm shares, and the run's evaluation,
logging, checkpoints, fault tolerance and rollout engine."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lite_cpt.prompt_fields import EvalPrompt
from lite_cpt.recipe_section import Section
from lite_cpt.recipe_tasks import BenchmarkEntry
from lite_cpt.train.sft_schedule import ScheduleFields


class ArmConfig(Section, ScheduleFields):
    """What every arm's recipe entry holds, whatever its method. The entry of a method with
    settings of its own (`rft:`, `rif:`, `replay:`, `ewc:`) is this plus the fields its arm
    plugin declares (lite_cpt/arms/<plugin>/settings.py); lite_cpt.recipe_entries builds it."""

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

    @field_validator("micro_batch_tokens")
    @classmethod
    def _positive_budget(cls, budget: int | str) -> int | str:
        if isinstance(budget, int) and budget < 1:
            raise ValueError(f"micro_batch_tokens must be a positive token count, auto or off (got {budget})")
        return budget


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


class EvaluationConfig(Section):
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Decoding settings.")
    general: list[BenchmarkEntry] = Field(
        default_factory=list, description="General benchmarks evaluated after every task."
    )
    prompt: EvalPrompt = Field(
        "trained", description="Evaluation prompt of every arm (an arm's eval_prompt overrides it): trained = "
        "the format the arm trained with (SFT arms: direct answers; RL arms: their rft.cot), cot = the "
        "chain-of-thought prompt for all, direct = the direct-answer prompt for all.",
    )


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
    offload_trainer: bool = Field(
        True, description="vllm on CUDA: move the trainer's frozen base, adapters and optimizer state to host "
        "memory while vLLM generates (EasyR1's actor offload), so gpu_memory_utilization can give vLLM's KV cache "
        "that memory too; false keeps them on the GPU (then the share must fit beside them).",
    )
    cpu_kv_cache_gb: int = Field(2, ge=1, description="vllm on CPU: KV cache size in GB (VLLM_CPU_KVCACHE_SPACE).")
    max_num_seqs: int = Field(256, ge=1, description="vllm: the most sequences decoded at once.")
