"""Analytic GPU planner: peak memory per training phase, auto knobs, and what to turn.

`plan(recipe, gpu_gb)` estimates, for every arm of a recipe, the peak GPU memory of each phase:

    sft_step      forward + backward of one SFT micro-batch (gradient checkpointing), grads, AdamW
    rollout       `generate` of G answers for a batch of prompts (KV cache, prefill, sampling)
    logprob_pass  no-grad forward for the old-policy / reference log-probs of the rollouts
    grpo_step     forward + backward of one GRPO micro-batch over prompt + completion tokens
    evaluation    greedy generation for the accuracy matrix (no optimizer state on the GPU)

A phase is a sequence of instants (vision encoder, layer backward, optimizer step, prefill,
end of decoding ...); the peak of a phase is the largest instant, and its components add up to
that peak. Every byte count is a named formula over the model shape and the recipe; the
constants below say what they stand for. Sizes are GiB (2^30 bytes): the unit GPU capacities are
quoted in ("24 GB" cards hold 24 GiB) and the unit of `torch.cuda.max_memory_allocated`.

What the numbers assume about the training code (the loader and steps of lite-cpt):
- frozen base: NF4 (bitsandbytes, double quantisation, blocks of 64) on the language model's
  linear layers; embeddings, lm_head, norms, biases and the vision tower stay bf16;
- LoRA adapters in fp32 (peft's default) used without autocast, so every adapted linear keeps
  an fp32 copy of its input for the backward pass;
- gradient checkpointing is non-reentrant, per decoder layer;
- AdamW keeps fp32 m and v; its foreach step holds one extra fp32 copy of the adapter;
- attention is SDPA; with a padding mask transformers repeats K/V to all heads first;
- log-probs come from `lite_cpt.kernels.fused_linear_logprob` on the CUDA (Triton) path, whose

Modules: `shapes` (model sizes, parameter counts, LoRA layout, shape -> transformers config),
`workload` (what an arm of a recipe asks of the GPU), `bytes` (the byte formulas), `search`
(knob choice and advice), `plan` (the per-arm plans). Rendering lives in the CLI layer.
"""

from lite_cpt.planner.bytes import GIB, SAFETY_MARGIN, default_logprob_chunk, phase_peak_gb, tensor_peak_bytes
from lite_cpt.planner.plan import ArmPlan, PhasePlan, Plan, gpu_memory_gb, plan, plan_workload, resolve_eval_batch, resolve_knobs
from lite_cpt.planner.search import SATURATING_SEQUENCES, SATURATING_TOKENS, advice_for, choose_eval_batch, choose_knobs
from lite_cpt.planner.shapes import (
    DEFAULT_LORA_TARGETS,
    KNOWN_SHAPES,
    QWEN25_VL_3B,
    QWEN25_VL_7B,
    ModelShape,
    hf_config_from_shape,
    lora_parameters,
    parameter_counts,
    resolve_shape,
    seven_b_config,
    total_parameters,
)
from lite_cpt.planner.workload import PHASES, Knobs, Workload, workload_of

__all__ = [
    "DEFAULT_LORA_TARGETS", "GIB", "KNOWN_SHAPES", "PHASES", "QWEN25_VL_3B", "QWEN25_VL_7B",
    "SAFETY_MARGIN", "SATURATING_SEQUENCES", "SATURATING_TOKENS", "ArmPlan", "Knobs", "ModelShape",
    "PhasePlan", "Plan", "Workload", "advice_for", "choose_eval_batch", "choose_knobs", "default_logprob_chunk",
    "gpu_memory_gb", "hf_config_from_shape", "lora_parameters", "parameter_counts", "phase_peak_gb",
    "plan", "plan_workload", "resolve_eval_batch", "resolve_knobs", "resolve_shape", "seven_b_config", "tensor_peak_bytes",
    "total_parameters", "workload_of",
]
