"""The recipe's `model` section: the base model, its LoRA adapters and the offline tiny model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lite_cpt.recipe_section import Section


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
