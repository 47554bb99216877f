"""The GRPO settings of the RL arms: `rft:` in the recipe entry of an rft, multitask_rft or rif_rft arm."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from lite_cpt.recipe_section import Section


class RFTConfig(Section):
    """GRPO settings (used by rft, rif_rft and multitask_rft arms)."""

    group_size: int = Field(5, ge=2, description="Rollouts per prompt (G).")
    prompts_per_step: int = Field(4, ge=1, description="Prompts per policy update.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of rollouts.")
    top_p: float = Field(0.99, gt=0, le=1, description="Nucleus sampling of rollouts.")
    top_k: int = Field(0, ge=0, description="Top-k sampling of rollouts; 0 = off (EasyR1: -1, off).")
    repetition_penalty: float = Field(
        1.0, gt=0, description="Repetition penalty of rollouts; 1.0 = off. Every sampling setting is passed "
        "explicitly, so none comes from the checkpoint's generation_config.",
    )
    max_new_tokens: int = Field(64, ge=1, description="Longest rollout answer.")
    rollout_batch_size: int | Literal["auto"] = Field(
        "auto", description="Prompts per generate call (each expanded to G sequences); auto = planner."
    )
    kl: bool = Field(True, description="Add the k3 KL penalty to the reference policy.")
    kl_beta: float = Field(0.01, ge=0, description="KL coefficient.")
    kl_reference: Literal["previous_task", "base"] = Field(
        "previous_task",
        description="KL reference: previous_task = the policy after the previous task, held as a frozen "
        "second adapter (the paper's setup; the first task's is the base); base = the base model for every "
        "task (an extra pull towards the base).",
    )
    eps_low: float = Field(0.2, ge=0, description="Lower clip range of the ratio (EasyR1 clip_ratio_low).")
    eps_high: float = Field(0.3, ge=0, description="Upper clip range of the ratio (EasyR1 clip_ratio_high).")
    dual_clip: float | None = Field(
        3.0, gt=1, description="Dual-clip constant C: for A < 0 the loss is capped at -C A (EasyR1 "
        "clip_ratio_dual); None = plain PPO clipping.",
    )
    inner_epochs: int = Field(1, ge=1, description="PPO epochs over each batch of rollouts.")
    mini_batches_per_rollout: int = Field(
        1, ge=1, description="Optimizer steps per rollout batch, each on 1/M of its prompts with the old "
        "policy fixed (EasyR1: 512 prompts rolled out, 128 per step = 4).",
    )
    advantage: Literal["grpo", "rloo", "remax"] = Field("grpo", description="Advantage estimator.")
    scale_rewards: bool = Field(True, description="Divide group-centred rewards by their std (GRPO).")
    aggregation: Literal["token-mean", "seq-mean", "micro-token-mean"] = Field(
        "token-mean", description="Loss aggregation of a step: token-mean over the mini-batch, seq-mean (mean of "
        "each rollout's token mean), or micro-token-mean: EasyR1's of the paper's period, each micro-batch of "
        "loss_micro_batch rollouts its own token mean, divided by their count (lite_cpt/train/aggregation.py).",
    )
    loss_micro_batch: int = Field(
        4, ge=1, description="Rollouts per micro-batch of micro-token-mean (EasyR1 "
        "micro_batch_size_per_device_for_update: 4); the memory micro-batches are the planner's either way.",
    )
    shared_prefix: bool = Field(
        True, description="Score each prompt once for its group's answers (one packed row [prompt, "
        "answers] with a shared-prefix mask: P + G·R tokens instead of G·(P + R), the same log-probs "
        "and gradients) in the reference, old-policy and update passes; false = one row per answer.",
    )
    tis_cap: float | None = Field(
        None, gt=0, description="Truncated importance sampling: each token's policy-gradient term is weighted by "
        "min(exp(old_logp - sampler_logp), tis_cap), correcting for a rollout engine (vllm) whose log-probs "
        "differ from the trainer's; None = off (e.g. 2.0).",
    )
    cot: bool = Field(True, description="Chain-of-thought prompt, <think>…</think><answer>…</answer>.")
    format_weight: float = Field(
        0.1, ge=0, le=1, description="Weight of the format reward in CoT mode (a task's own format_weight "
        "overrides it)."
    )

    @property
    def uses_kl(self) -> bool:
        """Whether the loss has a KL term: `kl` on and a positive `kl_beta` (two switches, one fact)."""
        return self.kl and self.kl_beta > 0

    @property
    def holds_reference(self) -> bool:
        """Whether the KL reference is a frozen second adapter (the previous task's policy): the
        one answer the trainer, the calibration and the planner all read."""
        return self.uses_kl and self.kl_reference == "previous_task"

    @model_validator(mode="after")
    def _mini_batches(self) -> "RFTConfig":
        if self.prompts_per_step % self.mini_batches_per_rollout:
            raise ValueError(
                f"rft.prompts_per_step ({self.prompts_per_step}) must split evenly into "
                f"rft.mini_batches_per_rollout ({self.mini_batches_per_rollout}) mini-batches"
            )
        return self


class RLFields(BaseModel):
    """What an RL arm adds to its recipe entry."""

    rft: RFTConfig = Field(default_factory=RFTConfig, description="GRPO settings.")


def rl_settings(arm) -> RFTConfig:
    """An arm entry's GRPO settings: its `rft:`, or the defaults for an arm without one (an
    SFT-based arm, whose plan reads them only for phases it does not run)."""
    return getattr(arm, "rft", None) or RFTConfig()
