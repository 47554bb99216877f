"""Analytic GPU-memory planner: peak memory per training phase, auto knobs, and what to turn.

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
  backward holds one bf16 [tokens, chunk] buffer; "naive" is the library path that materialises
  [tokens, vocab] logits (all positions for SFT, completion positions for GRPO).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lite_cpt.errors import UserError
from lite_cpt.recipe import LoraConfig

GIB = 2**30

# --------------------------------------------------------------------------------------------
# Constants of the memory model (bytes unless said otherwise)

NF4_BYTES_PER_PARAM = 0.5  # 4-bit codes, two per byte
NF4_BLOCK = 64  # parameters per absmax block (bitsandbytes default)
DOUBLE_QUANT_BLOCK = 256  # absmax values per second-level fp32 constant
# Quantisation constants per parameter: one 8-bit absmax per 64 weights plus one fp32 per
# 256 absmax values with double quantisation (= 0.127 bits/param), one fp32 per 64 without.
NF4_CONSTANTS_PER_PARAM_DQ = 1 / NF4_BLOCK + 4 / (NF4_BLOCK * DOUBLE_QUANT_BLOCK)
NF4_CONSTANTS_PER_PARAM = 4 / NF4_BLOCK
NF4_DOUBLE_QUANT = True  # the loader sets bnb_4bit_use_double_quant=True
INT8_BYTES_PER_PARAM = 1.0  # LLM.int8 weights; plus one fp32 scale per output row
ADAPTER_BYTES = 4  # peft keeps LoRA weights (and so their grads) in fp32
ADAM_STATE_BYTES = 8  # fp32 exp_avg + exp_avg_sq per trainable parameter
ADAMW_FOREACH_TEMP_BYTES = 4  # torch's foreach AdamW step materialises sqrt(v) once
EWC_STATE_BYTES = 8  # fp32 diagonal Fisher + fp32 anchor copy per adapter parameter
FP32 = 4
INT64 = 8
PIXEL_VALUES_PER_PATCH = 3 * 2 * 14 * 14  # channels x temporal patch x patch^2 (Qwen2.5-VL)
SAMPLING_BYTES_PER_LOGIT = 16  # fp32 logits + sorted copy + int64 sort indices (top-p)
GREEDY_BYTES_PER_LOGIT = 4  # fp32 next-token logits
GRPO_LOSS_BYTES_PER_TOKEN = 40  # ratio, clipped ratio, k3, advantages, masks ... in fp32
# Naive log-prob: bf16 logits + fp32 upcast + log_softmax (+ fp32 grad when training).
NAIVE_LOGIT_BYTES_TRAIN = 2 + 3 * FP32
NAIVE_LOGIT_BYTES_NOGRAD = 2 + 2 * FP32
FUSED_DZ_BYTES = 2  # Triton backward: one bf16 dz buffer of [tokens, chunk]
FUSED_FORWARD_BYTES = 1 << 20  # Triton forward: fp32 split partials, under 1 MiB
KERNEL_CHUNK_ELEMENTS = 1 << 27  # the kernel's own default: chunk = 2^27 // tokens
LOGPROB_CHUNKS = (32768, 16384, 8192, 4096, 2048, 1024)  # vocab rows per chunk, largest first
CUDA_CONTEXT_GIB = 0.5  # CUDA context, cuBLAS/Triton modules: outside torch's allocator
FRAGMENTATION = 0.05  # caching-allocator slack over live tensors (expandable segments help)
SAFETY_MARGIN = 0.10  # share of the GPU the auto knobs leave free
DEFAULT_MAX_PIXELS = 12845056  # Qwen2.5-VL processor default when model.max_pixels is unset

DEFAULT_LORA_TARGETS = LoraConfig.model_fields["target_modules"].default
PHASES = ("sft_step", "rollout", "logprob_pass", "grpo_step", "evaluation")
SFT_METHODS = ("sft", "multitask_sft", "replay", "ewc")
RFT_METHODS = ("rft", "rif_rft", "multitask_rft")


# --------------------------------------------------------------------------------------------
# Model shapes and parameter counts


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Qwen2.5-VL model that memory depends on."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tie_embeddings: bool
    vision_layers: int
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    vision_patch: int = 14
    vision_temporal_patch: int = 2
    vision_merge: int = 2
    vision_out_hidden: int = 0
    vision_in_channels: int = 3

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def pixels_per_image_token(self) -> int:
        """An image token is a merge x merge group of patch x patch pixels (784 for Qwen2.5-VL)."""
        return (self.vision_patch * self.vision_merge) ** 2

    @property
    def patches_per_image_token(self) -> int:
        return self.vision_merge**2

    @classmethod
    def from_hf_config(cls, config: Any, name: str | None = None) -> "ModelShape":
        """From a transformers `Qwen2_5_VLConfig`, or its dict (config.json, nested or flat)."""
        data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        text = data.get("text_config") or data
        vision = data.get("vision_config")
        if not vision:
            raise UserError("model config has no vision_config: the planner models Qwen2.5-VL models")
        try:
            hidden = int(text["hidden_size"])
            heads = int(text["num_attention_heads"])
            tie = data.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
            return cls(
                name=name or data.get("_name_or_path") or data.get("model_type", "qwen2_5_vl"),
                layers=int(text["num_hidden_layers"]),
                hidden=hidden,
                intermediate=int(text["intermediate_size"]),
                heads=heads,
                kv_heads=int(text.get("num_key_value_heads") or heads),
                head_dim=int(text.get("head_dim") or hidden // heads),
                vocab=int(text["vocab_size"]),
                tie_embeddings=bool(tie),
                vision_layers=int(vision["depth"]),
                vision_hidden=int(vision["hidden_size"]),
                vision_intermediate=int(vision["intermediate_size"]),
                vision_heads=int(vision["num_heads"]),
                vision_patch=int(vision.get("patch_size", 14)),
                vision_temporal_patch=int(vision.get("temporal_patch_size", 2)),
                vision_merge=int(vision.get("spatial_merge_size", 2)),
                vision_out_hidden=int(vision.get("out_hidden_size") or hidden),
                vision_in_channels=int(vision.get("in_channels", 3)),
            )
        except KeyError as missing:
            raise UserError(f"model config lacks {missing}: cannot plan memory for it") from None


# Public config.json numbers of the two released sizes.
QWEN25_VL_7B = ModelShape(
    name="Qwen/Qwen2.5-VL-7B-Instruct", layers=28, hidden=3584, intermediate=18944, heads=28,
    kv_heads=4, head_dim=128, vocab=152064, tie_embeddings=False, vision_layers=32,
    vision_hidden=1280, vision_intermediate=3420, vision_heads=16, vision_out_hidden=3584,
)
QWEN25_VL_3B = ModelShape(
    name="Qwen/Qwen2.5-VL-3B-Instruct", layers=36, hidden=2048, intermediate=11008, heads=16,
    kv_heads=2, head_dim=128, vocab=151936, tie_embeddings=True, vision_layers=32,
    vision_hidden=1280, vision_intermediate=3420, vision_heads=16, vision_out_hidden=2048,
)
KNOWN_SHAPES = {"7b": QWEN25_VL_7B, "3b": QWEN25_VL_3B}


def tiny_shape(tiny) -> ModelShape:
    """The shape `lite_cpt.tiny.build_config` gives for a recipe's `model.tiny` section."""
    return ModelShape(
        name="tiny", layers=tiny.num_layers, hidden=tiny.hidden_size,
        intermediate=tiny.intermediate_size, heads=tiny.num_heads, kv_heads=tiny.num_kv_heads,
        head_dim=tiny.hidden_size // tiny.num_heads, vocab=tiny.vocab_size, tie_embeddings=False,
        vision_layers=tiny.vision_depth, vision_hidden=tiny.vision_hidden_size,
        vision_intermediate=tiny.vision_hidden_size * 2,
        vision_heads=max(1, tiny.vision_hidden_size // 16), vision_out_hidden=tiny.hidden_size,
    )


def resolve_shape(model_cfg) -> ModelShape:
    """Shape of `model.name`: the built-in 7B/3B numbers, a local config.json, or the tiny model."""
    name = model_cfg.name
    if name == "tiny":
        return tiny_shape(model_cfg.tiny)
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return ModelShape.from_hf_config(json.loads((path / "config.json").read_text()), name=name)
    size = re.search(r"qwen2\.5-vl-(\d+)b", name.lower())
    if size and f"{size.group(1)}b" in KNOWN_SHAPES:
        return dataclasses.replace(KNOWN_SHAPES[f"{size.group(1)}b"], name=name)
    try:  # a config already in the local Hugging Face cache
        from transformers import AutoConfig

        return ModelShape.from_hf_config(AutoConfig.from_pretrained(name, local_files_only=True), name=name)
    except (OSError, ValueError):
        raise UserError(
            f"cannot plan memory for model '{name}': give a local directory with a config.json, "
            "a Qwen2.5-VL 7B/3B id, or `tiny`"
        ) from None


def lm_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of the linear layers of one decoder layer."""
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    return {
        "self_attn.q_proj": (h, q), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
        "self_attn.o_proj": (q, h), "mlp.gate_proj": (h, i), "mlp.up_proj": (h, i),
        "mlp.down_proj": (i, h),
    }


def vision_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) of the linear layers of one vision block."""
    v, vi = shape.vision_hidden, shape.vision_intermediate
    return {"attn.qkv": (v, 3 * v), "attn.proj": (v, v), "mlp.gate_proj": (v, vi),
            "mlp.up_proj": (v, vi), "mlp.down_proj": (vi, v)}


def merger_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    merged = shape.vision_hidden * shape.vision_merge**2
    return {"mlp.0": (merged, merged), "mlp.2": (merged, shape.vision_out_hidden)}


def parameter_counts(shape: ModelShape) -> dict[str, int]:
    """Parameters by group. Formulas (H hidden, V vocab, L layers, v vision hidden):

    embed_tokens = V·H; lm_head = V·H unless tied
    lm_linear_weights = L · Σ in·out over q,k,v,o,gate,up,down
    lm_biases = L · (q_dim + 2·kv_dim)          (q, k, v carry biases in Qwen2)
    lm_norms = L · 2H + H                        (two RMSNorms per layer + the final one)
    vision = patch_embed + blocks + merger, every vision linear with a bias, RMSNorms weight-only
    """
    return dict(_count_parameters(shape))


@functools.lru_cache(maxsize=64)
def _count_parameters(shape: ModelShape) -> tuple[tuple[str, int], ...]:
    L = shape.layers
    lm_linear = L * sum(i * o for i, o in lm_linear_shapes(shape).values())
    patch_embed = shape.vision_hidden * shape.vision_in_channels * shape.vision_temporal_patch * shape.vision_patch**2
    block = 2 * shape.vision_hidden + sum(i * o + o for i, o in vision_linear_shapes(shape).values())
    merger = shape.vision_hidden + sum(i * o + o for i, o in merger_linear_shapes(shape).values())
    embed = shape.vocab * shape.hidden
    return tuple({
        "embed_tokens": embed,
        "lm_head": 0 if shape.tie_embeddings else embed,
        "lm_linear_weights": lm_linear,
        "lm_biases": L * (shape.q_dim + 2 * shape.kv_dim),
        "lm_norms": L * 2 * shape.hidden + shape.hidden,
        "vision": patch_embed + shape.vision_layers * block + merger,
    }.items())


def total_parameters(shape: ModelShape) -> int:
    return sum(parameter_counts(shape).values())


def linear_module_names(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """Every linear layer of the model by its transformers module name, with (in, out)."""
    names = {}
    for layer in range(shape.layers):
        for suffix, dims in lm_linear_shapes(shape).items():
            names[f"model.language_model.layers.{layer}.{suffix}"] = dims
    for block in range(shape.vision_layers):
        for suffix, dims in vision_linear_shapes(shape).items():
            names[f"model.visual.blocks.{block}.{suffix}"] = dims
    for suffix, dims in merger_linear_shapes(shape).items():
        names[f"model.visual.merger.{suffix}"] = dims
    names["lm_head"] = (shape.hidden, shape.vocab)
    return names


@dataclass(frozen=True)
class LoraLayout:
    """Which linear layers a LoRA regex adapts (peft matches it with re.fullmatch on names)."""

    parameters: int
    lm_modules: dict[int, tuple[str, ...]]  # decoder layer -> adapted module suffixes
    vision_adapted: bool
    head_adapted: bool

    @property
    def busiest_layer(self) -> tuple[str, ...]:
        """The adapted suffixes of the layer with the most adapted inputs (worst-case activations)."""
        return max(self.lm_modules.values(), key=len, default=())


@functools.lru_cache(maxsize=256)
def lora_layout(shape: ModelShape, r: int, target_modules: str = DEFAULT_LORA_TARGETS) -> LoraLayout:
    """LoRA parameters = Σ over adapted linears of r·(in + out)."""
    regex = re.compile(target_modules)
    total, per_layer, vision, head = 0, {}, False, False
    for name, (fan_in, fan_out) in linear_module_names(shape).items():
        if not regex.fullmatch(name):
            continue
        total += r * (fan_in + fan_out)
        if name.startswith("model.language_model.layers."):
            layer, suffix = name.split(".", 4)[3:]
            per_layer.setdefault(int(layer), []).append(suffix)
        elif name.startswith("model.visual."):
            vision = True
        else:
            head = True
    return LoraLayout(total, {k: tuple(v) for k, v in per_layer.items()}, vision, head)


def lora_parameters(shape: ModelShape, r: int, target_modules: str = DEFAULT_LORA_TARGETS) -> int:
    return lora_layout(shape, r, target_modules).parameters


# --------------------------------------------------------------------------------------------
# The workload of one arm, and the knobs the planner chooses


@dataclass(frozen=True)
class Workload:
    """Everything about one arm of a recipe that its memory depends on."""

    arm: str
    method: str
    shape: ModelShape
    quantization: str  # nf4 | int8 | none
    act_bytes: int  # 2 for bf16/fp16 compute, 4 for fp32
    lora_r: int
    lora_targets: str
    lora_dropout: float
    gradient_checkpointing: bool
    prompt_tokens: int  # longest prompt, image tokens included
    image_tokens: int
    answer_tokens: int  # longest SFT answer
    batch_size: int
    micro_batch_size: int | None  # None = auto
    logprob_chunk: int | None  # None = auto
    rollout_batch_size: int | None  # None = auto
    group_size: int
    rif_rollouts: int  # K rollouts per instance when filtering (rif_rft), else 0
    prompts_per_step: int
    new_tokens: int
    eval_batch: int
    eval_new_tokens: int
    ewc: bool

    @property
    def is_rft(self) -> bool:
        return self.method in RFT_METHODS

    @property
    def rollout_group(self) -> int:
        """Sequences per prompt in one generate call: G, or RIF's K when that is larger."""
        return max(self.group_size, self.rif_rollouts)

    @property
    def phases(self) -> tuple[str, ...]:
        if self.is_rft:
            return ("rollout", "logprob_pass", "grpo_step", "evaluation")
        return ("sft_step", "evaluation")

    @property
    def max_micro_batch(self) -> int:
        return self.prompts_per_step * self.group_size if self.is_rft else self.batch_size


@dataclass(frozen=True)
class Knobs:
    """micro_batch_size: sequences per forward/backward (SFT samples; GRPO rollouts).
    logprob_chunk: vocab rows per chunk of the fused log-prob backward (`chunk_size=`).
    rollout_batch_size: prompts per `generate` call (each expanded to G sequences)."""

    micro_batch_size: int
    logprob_chunk: int
    rollout_batch_size: int

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def image_tokens_of(recipe) -> tuple[int, list[str]]:
    """Image tokens per prompt (model.max_pixels / 784) and notes about how they were bounded."""
    model = recipe.model
    shape_ppt = 784  # (14 * 2)^2 for every Qwen2.5-VL size
    if model.name == "tiny":
        return (model.tiny.image_size // 28) ** 2, []
    longest_prompt = max(t.max_prompt_tokens for t in recipe.tasks)
    if model.max_pixels is None:
        note = (
            f"model.max_pixels is unset: the processor allows up to {DEFAULT_MAX_PIXELS // shape_ppt} image "
            f"tokens; the plan assumes images fit in the {longest_prompt}-token prompt. Set "
            "model.max_pixels (200704 = 256 image tokens) to bound them."
        )
        return min(DEFAULT_MAX_PIXELS // shape_ppt, longest_prompt), [note]
    tokens = max(1, model.max_pixels // shape_ppt)
    notes = []
    if tokens > longest_prompt:
        notes.append(
            f"model.max_pixels allows {tokens} image tokens, more than tasks.*.max_prompt_tokens "
            f"({longest_prompt}); the plan uses {tokens}-token prompts. Lower model.max_pixels."
        )
    return tokens, notes


def _fixed(value: Any) -> int | None:
    """A knob the recipe fixes, or None when it is `auto` (or the recipe has no such field)."""
    return None if value in (None, "auto") else int(value)


def workload_of(recipe, arm, shape: ModelShape | None = None) -> Workload:
    """The `Workload` of `arm` (an ArmConfig) in `recipe`, as it would run on a CUDA GPU;
    `shape` replaces the one `model.name` resolves to."""
    model = recipe.model
    shape = shape or resolve_shape(model)
    image_tokens, _ = image_tokens_of(recipe)
    prompt = max(max(t.max_prompt_tokens for t in recipe.tasks), image_tokens)
    rft = arm.rft
    quant = "nf4" if model.quantization == "auto" else model.quantization
    act_bytes = 4 if model.dtype == "float32" else 2
    return Workload(
        arm=arm.name,
        method=arm.method,
        shape=shape,
        quantization=quant,
        act_bytes=act_bytes,
        lora_r=model.lora.r,
        lora_targets=model.lora.target_modules,
        lora_dropout=model.lora.dropout,
        gradient_checkpointing=model.gradient_checkpointing,
        prompt_tokens=prompt,
        image_tokens=image_tokens,
        answer_tokens=max(t.max_answer_tokens for t in recipe.tasks),
        batch_size=arm.batch_size,
        micro_batch_size=_fixed(arm.micro_batch_size),
        logprob_chunk=_fixed(getattr(model, "logprob_chunk", "auto")),
        rollout_batch_size=_fixed(getattr(rft, "rollout_batch_size", "auto")),
        group_size=rft.group_size,
        rif_rollouts=arm.rif.rollouts if arm.method == "rif_rft" else 0,
        prompts_per_step=rft.prompts_per_step,
        new_tokens=rft.max_new_tokens,
        eval_batch=recipe.evaluation.generation.batch_size,
        eval_new_tokens=recipe.evaluation.generation.max_new_tokens,
        ewc=arm.method == "ewc",
    )


# --------------------------------------------------------------------------------------------
# Byte formulas


def frozen_weight_bytes(work: Workload) -> dict[str, float]:
    """Frozen base by group: quantised LM linears (+ their constants) and 16-bit everything else."""
    counts = parameter_counts(work.shape)
    linear = counts["lm_linear_weights"]
    half = work.act_bytes
    if work.quantization == "nf4":
        per_param = NF4_BYTES_PER_PARAM + (NF4_CONSTANTS_PER_PARAM_DQ if NF4_DOUBLE_QUANT else NF4_CONSTANTS_PER_PARAM)
        linear_bytes = linear * per_param
    elif work.quantization == "int8":
        rows = work.shape.layers * sum(out for _, out in lm_linear_shapes(work.shape).values())
        linear_bytes = linear * INT8_BYTES_PER_PARAM + rows * FP32
    else:
        linear_bytes = linear * half
    return {
        "lm_linears": linear_bytes,
        "embeddings_and_head": (counts["embed_tokens"] + counts["lm_head"]) * half,
        "vision_tower": counts["vision"] * half,
        "norms_and_biases": (counts["lm_biases"] + counts["lm_norms"]) * half,
    }


def _adapted_inputs(work: Workload) -> list[int]:
    """Bytes per token of the inputs that the adapted linears of the busiest layer keep.

    fp32 adapters without autocast cast their input to fp32 one module at a time, so each
    adapted module holds its own copy (in·4 B). Adapters in the compute dtype share the input
    tensor of their base layer, so each distinct input counts once.
    """
    dims = lm_linear_shapes(work.shape)
    adapted = lora_layout(work.shape, work.lora_r, work.lora_targets).busiest_layer
    if ADAPTER_BYTES != work.act_bytes:
        return [dims[s][0] * ADAPTER_BYTES for s in adapted]
    groups = {"self_attn.q_proj": "attn_in", "self_attn.k_proj": "attn_in", "self_attn.v_proj": "attn_in",
              "self_attn.o_proj": "attn_out", "mlp.gate_proj": "mlp_in", "mlp.up_proj": "mlp_in",
              "mlp.down_proj": "mlp_act"}
    seen = {groups[s]: dims[s][0] * work.act_bytes for s in adapted}
    return list(seen.values())


def layer_saved_bytes_per_token(work: Workload) -> float:
    """Activations one decoder layer keeps for its backward pass, per token.

    2 RMSNorms: fp32 input copy each (4H)                      -> 8H
    SDPA: q, K and V repeated to all heads, output (4·q_dim·b), log-sum-exp (4·heads)
    SwiGLU: gate output (SiLU), SiLU output and up output (mul) -> 3·I·b
    LoRA: adapted inputs (see _adapted_inputs) + r-wide lora_A outputs (r·4 per module)
    LoRA dropout > 0: dropped copy + mask per adapted module (in·(4 + 1))
    """
    s, b = work.shape, work.act_bytes
    adapted = lora_layout(s, work.lora_r, work.lora_targets).busiest_layer
    dims = lm_linear_shapes(s)
    total = 2 * s.hidden * FP32
    total += 4 * s.q_dim * b + s.heads * FP32
    total += 3 * s.intermediate * b
    total += sum(_adapted_inputs(work)) + len(adapted) * work.lora_r * ADAPTER_BYTES
    if work.lora_dropout > 0:
        total += sum(dims[m][0] * (ADAPTER_BYTES + 1) for m in adapted)
    return total


def backward_working_bytes_per_token(work: Workload) -> float:
    """Gradients alive while one layer runs backward: around the SwiGLU, the gradients of the
    down-projection input, SiLU output, up and gate outputs (4·I·b), plus the fp32 gradient the
    down-projection adapter returns for its input (I·4)."""
    return 4 * work.shape.intermediate * work.act_bytes + work.shape.intermediate * ADAPTER_BYTES


def inference_bytes_per_token(work: Workload) -> float:
    """Transient memory of one decoder layer in a no-grad forward, per token.

    Residual stream and normed copy (2H·b) + fp32 RMSNorm temporaries (2H·4) + the fp32 input
    copy of an adapter (H·4) + the MLP peak while the up projection adds its adapter output:
    SiLU(gate), base result and either the fp32 adapter output and its scaled copy (2I·4) or,
    for 16-bit adapters, the adapter output and the sum (2I·b).
    """
    s, b = work.shape, work.act_bytes
    mlp = s.intermediate * (2 * b + 2 * max(ADAPTER_BYTES, b))
    return 2 * s.hidden * b + 2 * s.hidden * FP32 + s.hidden * ADAPTER_BYTES + mlp


def vision_bytes_per_image(work: Workload) -> float:
    """Vision tower working set for one image (no grad: the tower is frozen, no adapters).

    Per patch: residual + normed copy (2v·b), fp32 RMSNorm temporaries (2v·4), qkv (3v·b),
    gate/up/SiLU outputs (3·vi·b); plus the patches' pixel values (fp32 and a compute-dtype copy)
    and the merged output (tokens · out_hidden · b).
    """
    s, b = work.shape, work.act_bytes
    patches = work.image_tokens * s.patches_per_image_token
    per_patch = 2 * s.vision_hidden * b + 2 * s.vision_hidden * FP32 + 3 * s.vision_hidden * b
    per_patch += 3 * s.vision_intermediate * b
    pixels = patches * PIXEL_VALUES_PER_PATCH * (FP32 + b)
    return patches * per_patch + pixels + work.image_tokens * s.vision_out_hidden * b


def kv_bytes_per_token(work: Workload) -> float:
    """KV cache per token: 2 (K and V) · layers · kv_heads · head_dim · bytes."""
    return 2 * work.shape.layers * work.shape.kv_dim * work.act_bytes


def batch_input_bytes(work: Workload, sequences: int, seq_len: int, images: int) -> float:
    """Token ids, attention/label masks, 3-D rope positions (int64), rope cos/sin, a 4-D boolean
    attention mask [B, 1, T, T], and the pixel values of the batch's images."""
    s, b = work.shape, work.act_bytes
    ids = sequences * seq_len * INT64 * 6
    rope = 2 * sequences * seq_len * s.head_dim * FP32
    mask = sequences * seq_len * seq_len
    pixels = images * work.image_tokens * s.patches_per_image_token * PIXEL_VALUES_PER_PATCH * (FP32 + b)
    return ids + rope + mask + pixels


def rollout_buffer_bytes(work: Workload) -> float:
    """The rollouts of one GRPO step kept on the GPU: ids and masks of prompt+completion, fp32
    per-token old/ref log-probs, masks, advantages, and each prompt's pixel values."""
    seqs = work.prompts_per_step * work.group_size
    seq_len = work.prompt_tokens + work.new_tokens
    pixels = work.prompts_per_step * work.image_tokens * work.shape.patches_per_image_token * PIXEL_VALUES_PER_PATCH * FP32
    return seqs * seq_len * INT64 * 2 + seqs * work.new_tokens * FP32 * 4 + pixels


def default_logprob_chunk(tokens: int, vocab: int) -> int:
    """The fused kernel's own choice (Triton path): about 2^27 elements per dz buffer."""
    return max(128, min(vocab, KERNEL_CHUNK_ELEMENTS // max(tokens, 1)))


def logprob_bytes(work: Workload, *, loss_tokens: int, logit_tokens: int, chunk: int, train: bool,
                  naive: bool) -> float:
    """Memory of turning hidden states into log-probs.

    naive: [logit_tokens, V] logits in bf16 and fp32, log_softmax and (training) their gradient.
    fused, training: the gathered hidden rows (N·H·b), an fp32 grad accumulator (N·H·4), the
    bf16 product dz@W (N·H·b) and one dz chunk (N·chunk·2); no grad: split partials (< 1 MiB).
    """
    s, b = work.shape, work.act_bytes
    if naive:
        per = NAIVE_LOGIT_BYTES_TRAIN if train else NAIVE_LOGIT_BYTES_NOGRAD
        return logit_tokens * s.vocab * per
    if not train:
        return loss_tokens * s.hidden * b + FUSED_FORWARD_BYTES
    return loss_tokens * s.hidden * (2 * b + FP32) + loss_tokens * chunk * FUSED_DZ_BYTES


def dequant_buffer_bytes(work: Workload) -> float:
    """bitsandbytes dequantises one whole weight for the input gradient of a quantised linear."""
    if work.quantization == "none":
        return 0.0
    return max(i * o for i, o in lm_linear_shapes(work.shape).values()) * work.act_bytes


def lora_state_bytes(work: Workload) -> dict[str, float]:
    n = lora_parameters(work.shape, work.lora_r, work.lora_targets)
    state = {
        "lora_weights": n * ADAPTER_BYTES,
        "lora_grads": n * ADAPTER_BYTES,
        "optimizer_states": n * ADAM_STATE_BYTES,
    }
    if work.ewc:
        state["ewc_state"] = n * EWC_STATE_BYTES
    return state


# --------------------------------------------------------------------------------------------
# Phases: each a list of instants, the peak is the largest


@dataclass
class Instant:
    name: str
    components: dict[str, float]  # bytes

    @property
    def total(self) -> float:
        return sum(self.components.values())


def _train_instants(work: Workload, knobs: Knobs, *, seq_len: int, loss_tokens: int, logit_tokens: int,
                    images: int, extra: dict[str, float], naive: bool) -> list[Instant]:
    """Instants of a forward + backward + optimizer step over one micro-batch of `seq_len` tokens."""
    s, b = work.shape, work.act_bytes
    mb = knobs.micro_batch_size
    tokens = mb * seq_len
    frozen = sum(frozen_weight_bytes(work).values())
    lora = lora_state_bytes(work)
    base = {"frozen_weights": frozen, **lora, **extra}
    inputs = batch_input_bytes(work, mb, seq_len, images)
    if work.gradient_checkpointing:
        # Layer inputs kept by the checkpoints, plus the final RMSNorm's fp32 input and output.
        stored = s.layers * tokens * s.hidden * b + tokens * s.hidden * (FP32 + b)
        working = tokens * (layer_saved_bytes_per_token(work) + backward_working_bytes_per_token(work))
    else:
        stored = s.layers * tokens * layer_saved_bytes_per_token(work) + tokens * s.hidden * (FP32 + b)
        working = tokens * backward_working_bytes_per_token(work)
    working += dequant_buffer_bytes(work)
    logprob = logprob_bytes(work, loss_tokens=mb * loss_tokens, logit_tokens=mb * logit_tokens,
                            chunk=knobs.logprob_chunk, train=True, naive=naive)
    backward = Instant("backward", {
        **base, "batch_inputs": inputs, "activations_stored": stored, "activations_layer": working,
        "logprob": logprob,
    })
    vision = Instant("vision_encoder", {**base, "batch_inputs": inputs, "vision_encoder": images * vision_bytes_per_image(work)})
    n = lora_parameters(work.shape, work.lora_r, work.lora_targets)
    step = Instant("optimizer_step", {**base, "optimizer_step": n * ADAMW_FOREACH_TEMP_BYTES})
    return [backward, vision, step]


def _generation_instants(work: Workload, *, sequences: int, prompt: int, new: int, base: dict[str, float],
                         sampling_bytes: int) -> list[Instant]:
    """Instants of `generate`: vision encoder, prefill (prompt KV + one layer's working set), and
    the end of decoding (full KV cache, the cache's torch.cat copy of one layer, K/V repeated to
    all heads for one layer's attention, next-token logits)."""
    s, b = work.shape, work.act_bytes
    kv = kv_bytes_per_token(work)
    inputs = batch_input_bytes(work, sequences, prompt, sequences)
    vision = Instant("vision_encoder", {**base, "batch_inputs": inputs,
                                        "vision_encoder": sequences * vision_bytes_per_image(work)})
    prefill = Instant("prefill", {
        **base, "batch_inputs": inputs, "kv_cache": sequences * prompt * kv,
        "generation_transient": sequences * prompt * inference_bytes_per_token(work),
    })
    full = sequences * (prompt + new)
    repeat = 2 * full * s.q_dim * b if s.kv_heads < s.heads else 0
    decode = Instant("decode_end", {
        **base, "batch_inputs": inputs, "kv_cache": full * kv,
        "generation_transient": full * kv / s.layers + repeat + sequences * s.vocab * sampling_bytes,
    })
    return [vision, prefill, decode]


def phase_instants(work: Workload, phase: str, knobs: Knobs, *, naive: bool = False) -> list[Instant]:
    s, b = work.shape, work.act_bytes
    frozen = sum(frozen_weight_bytes(work).values())
    lora = lora_state_bytes(work)
    if phase == "sft_step":
        return _train_instants(work, knobs, seq_len=work.prompt_tokens + work.answer_tokens,
                               loss_tokens=work.answer_tokens,
                               logit_tokens=work.prompt_tokens + work.answer_tokens, images=knobs.micro_batch_size,
                               extra={}, naive=naive)
    if phase == "grpo_step":
        extra = {"rollout_buffers": rollout_buffer_bytes(work)}
        instants = _train_instants(work, knobs, seq_len=work.prompt_tokens + work.new_tokens,
                                   loss_tokens=work.new_tokens, logit_tokens=work.new_tokens,
                                   images=knobs.micro_batch_size, extra=extra, naive=naive)
        instants[0].components["grpo_loss"] = knobs.micro_batch_size * work.new_tokens * GRPO_LOSS_BYTES_PER_TOKEN
        return instants
    # Phases without gradients: the optimizer state lives on (RFT), gradients are freed.
    resident = {"frozen_weights": frozen, "lora_weights": lora["lora_weights"]}
    if phase == "rollout":
        base = {**resident, "optimizer_states": lora["optimizer_states"]}
        return _generation_instants(work, sequences=knobs.rollout_batch_size * work.rollout_group,
                                    prompt=work.prompt_tokens, new=work.new_tokens, base=base,
                                    sampling_bytes=SAMPLING_BYTES_PER_LOGIT)
    if phase == "evaluation":
        return _generation_instants(work, sequences=work.eval_batch, prompt=work.prompt_tokens,
                                    new=work.eval_new_tokens, base=resident,
                                    sampling_bytes=GREEDY_BYTES_PER_LOGIT)
    if phase == "logprob_pass":
        mb = knobs.micro_batch_size
        seq_len = work.prompt_tokens + work.new_tokens
        tokens = mb * seq_len
        base = {**resident, "optimizer_states": lora["optimizer_states"],
                "rollout_buffers": rollout_buffer_bytes(work),
                "batch_inputs": batch_input_bytes(work, mb, seq_len, mb)}
        layers = Instant("layers", {**base, "activations_stored": tokens * s.hidden * b,
                                    "generation_transient": tokens * inference_bytes_per_token(work)})
        head = Instant("logprob", {**base, "activations_stored": tokens * s.hidden * b,
                                   "logprob": logprob_bytes(work, loss_tokens=mb * work.new_tokens,
                                                            logit_tokens=mb * work.new_tokens,
                                                            chunk=knobs.logprob_chunk, train=False, naive=naive)})
        vision = Instant("vision_encoder", {**base, "vision_encoder": mb * vision_bytes_per_image(work)})
        return [layers, head, vision]
    raise ValueError(f"unknown phase '{phase}'; phases: {', '.join(PHASES)}")


def tensor_peak_bytes(work: Workload, phase: str, knobs: Knobs, *, naive: bool = False) -> tuple[Instant, float]:
    """(the peak instant, its live tensor bytes): what torch.cuda.max_memory_allocated measures."""
    peak = max(phase_instants(work, phase, knobs, naive=naive), key=lambda i: i.total)
    return peak, peak.total


def device_peak_gb(tensor_bytes: float) -> float:
    """Tensor bytes plus allocator slack and the CUDA context, in GiB."""
    return tensor_bytes * (1 + FRAGMENTATION) / GIB + CUDA_CONTEXT_GIB


def phase_peak_gb(work: Workload, phase: str, knobs: Knobs, *, naive: bool = False) -> float:
    return device_peak_gb(tensor_peak_bytes(work, phase, knobs, naive=naive)[1])


# --------------------------------------------------------------------------------------------
# Knob choice


def _chunk_candidates(work: Workload, micro_batch: int) -> list[int]:
    """Chunk sizes from the kernel's own default down to the smallest; never above the vocab."""
    if work.logprob_chunk is not None:
        return [work.logprob_chunk]
    loss_tokens = micro_batch * (work.new_tokens if work.is_rft else work.answer_tokens)
    cap = default_logprob_chunk(loss_tokens, work.shape.vocab)
    chunks = [c for c in LOGPROB_CHUNKS if c <= cap and c <= work.shape.vocab]
    return chunks or [min(LOGPROB_CHUNKS[-1], work.shape.vocab)]


def _train_phases(work: Workload) -> tuple[str, ...]:
    return ("logprob_pass", "grpo_step") if work.is_rft else ("sft_step",)


#: Tokens per training forward pass beyond which a 3B-7B model's matmuls are compute-bound on
#: any current GPU: a larger micro-batch buys no speed, only memory (gradient accumulation
#: gives the same update), so the planner does not go past it.
SATURATING_TOKENS = 2048
#: Sequences per generate call beyond which decoding stops getting cheaper per sequence on a
#: single GPU for these sizes (the KV cache and prefill activations keep growing).
SATURATING_SEQUENCES = 16


def saturating_micro_batch(work: Workload) -> int:
    """Sequences per micro-batch that fill SATURATING_TOKENS (at least one)."""
    sequence = work.prompt_tokens + (work.new_tokens if work.is_rft else work.answer_tokens)
    return max(1, min(work.max_micro_batch, SATURATING_TOKENS // max(1, sequence)))


def saturating_rollout_batch(work: Workload) -> int:
    return max(1, min(work.prompts_per_step, SATURATING_SEQUENCES // max(1, work.rollout_group)))


def choose_knobs(work: Workload, usable_gb: float) -> tuple[Knobs, bool]:
    """The largest knobs, up to the point where the GPU is saturated (SATURATING_TOKENS,
    SATURATING_SEQUENCES), whose phases fit `usable_gb`: rollout batch first, then the
    micro-batch (largest first), then the log-prob chunk; knobs the recipe fixes stay as they
    are. Returns (knobs, whether every phase of the arm fits); the smallest knobs when none fit."""
    def fits(phase: str, knobs: Knobs) -> bool:
        return phase_peak_gb(work, phase, knobs) <= usable_gb

    rollout_batch = work.rollout_batch_size or 1
    if work.is_rft and work.rollout_batch_size is None:
        for candidate in range(saturating_rollout_batch(work), 0, -1):
            if fits("rollout", Knobs(1, LOGPROB_CHUNKS[-1], candidate)):
                rollout_batch = candidate
                break
    if work.micro_batch_size is not None:
        micro_batches = [work.micro_batch_size]
    else:
        micro_batches = list(range(saturating_micro_batch(work), 0, -1))
    for mb in micro_batches:
        for chunk in _chunk_candidates(work, mb):
            knobs = Knobs(mb, chunk, rollout_batch)
            if all(fits(p, knobs) for p in _train_phases(work)):
                return knobs, all(fits(p, knobs) for p in work.phases)
    smallest = Knobs(micro_batches[-1], _chunk_candidates(work, micro_batches[-1])[-1], rollout_batch)
    return smallest, False


def floor_knobs(work: Workload) -> Knobs:
    """The smallest knobs: micro-batch 1 (or the recipe's fixed value), smallest chunk, 1 prompt."""
    mb = 1 if work.micro_batch_size is None else work.micro_batch_size
    return Knobs(mb, _chunk_candidates(work, mb)[-1], work.rollout_batch_size or 1)


# --------------------------------------------------------------------------------------------
# Advice: recipe changes that lower the phases that do not fit


def _halve(value: int, floor: int = 1) -> int:
    return max(floor, value // 2)


def _modifications(work: Workload, phase: str) -> list[tuple[str, Workload]]:
    """(advice text, modified workload) for the recipe knobs that affect `phase`."""
    arm = f"arms.{work.arm}"
    out: list[tuple[str, Workload]] = []

    def add(text: str, **changes: Any) -> None:
        out.append((text, dataclasses.replace(work, **changes)))

    if work.micro_batch_size not in (None, 1) and phase in ("sft_step", "grpo_step", "logprob_pass"):
        add(f"set {arm}.micro_batch_size: auto (now {work.micro_batch_size})", micro_batch_size=None)
    if work.rollout_batch_size not in (None, 1) and phase == "rollout":
        add(f"set {arm}.rft.rollout_batch_size: auto (now {work.rollout_batch_size})", rollout_batch_size=None)
    if work.logprob_chunk is not None and work.logprob_chunk > LOGPROB_CHUNKS[-1] and phase in ("sft_step", "grpo_step"):
        add(f"set model.logprob_chunk: auto (now {work.logprob_chunk})", logprob_chunk=None)
    if phase in ("rollout", "grpo_step", "logprob_pass") and work.group_size > 2:
        g = _halve(work.group_size, 2)
        add(f"reduce rft.group_size ({arm}.rft.group_size: {work.group_size} -> {g})", group_size=g)
    if phase == "rollout" and work.rif_rollouts > work.group_size:
        k = max(work.group_size, _halve(work.rif_rollouts))
        add(f"reduce rif.rollouts ({arm}.rif.rollouts: {work.rif_rollouts} -> {k})", rif_rollouts=k)
    if phase in ("rollout", "grpo_step", "logprob_pass") and work.new_tokens > 16:
        add(f"lower rft.max_new_tokens ({arm}.rft.max_new_tokens: {work.new_tokens} -> {_halve(work.new_tokens)})",
            new_tokens=_halve(work.new_tokens))
    if phase == "sft_step" and work.answer_tokens > 16:
        add(f"lower tasks.*.max_answer_tokens ({work.answer_tokens} -> {_halve(work.answer_tokens)})",
            answer_tokens=_halve(work.answer_tokens))
    if work.image_tokens > 64 and work.shape.name != "tiny":
        tokens = _halve(work.image_tokens)
        add(f"lower model.max_pixels (to {tokens * work.shape.pixels_per_image_token} = {tokens} image tokens)",
            image_tokens=tokens, prompt_tokens=max(tokens, work.prompt_tokens - (work.image_tokens - tokens)))
    if work.prompt_tokens > 256:
        shorter = max(work.image_tokens + 64, (work.prompt_tokens * 3) // 4)
        if shorter < work.prompt_tokens:
            add(f"lower tasks.*.max_prompt_tokens ({work.prompt_tokens} -> {shorter})", prompt_tokens=shorter)
    if phase == "evaluation" and work.eval_batch > 1:
        add(f"lower evaluation.generation.batch_size ({work.eval_batch} -> {_halve(work.eval_batch)})",
            eval_batch=_halve(work.eval_batch))
    if work.quantization != "nf4":
        add(f"use model.quantization: nf4 (now {work.quantization})", quantization="nf4")
    if not work.gradient_checkpointing and phase in ("sft_step", "grpo_step"):
        add("set model.gradient_checkpointing: true", gradient_checkpointing=True)
    if work.lora_r > 8:
        add(f"lower model.lora.r ({work.lora_r} -> {_halve(work.lora_r)})", lora_r=_halve(work.lora_r))
    if work.shape.layers == QWEN25_VL_7B.layers and work.shape.hidden == QWEN25_VL_7B.hidden:
        add("use a smaller model (model.name: Qwen/Qwen2.5-VL-3B-Instruct)", shape=QWEN25_VL_3B)
    return out


ADVICE_PER_PHASE = 4


def advice_for(work: Workload, phase: str, usable_gb: float, limit: int = ADVICE_PER_PHASE) -> list[str]:
    """Recipe changes that lower `phase` at the smallest knobs, with their effect.

    Changes that make the phase fit come first; within each group the order of
    `_modifications` holds, which lists the least disruptive knobs first.
    """
    before = phase_peak_gb(work, phase, floor_knobs(work))
    ranked = []
    for priority, (text, changed) in enumerate(_modifications(work, phase)):
        after = phase_peak_gb(changed, phase, floor_knobs(changed))
        if after < before - 0.01:
            fits = after <= usable_gb
            verdict = "fits" if fits else "still over"
            ranked.append(((not fits, priority),
                           f"{text}: {phase} at the smallest knobs {before:.1f} -> {after:.1f} GiB ({verdict})"))
    ranked.sort(key=lambda item: item[0])
    return [text for _, text in ranked[:limit]]


# --------------------------------------------------------------------------------------------
# Plans


@dataclass
class PhasePlan:
    name: str
    arm: str
    instant: str  # the moment of the peak (backward, prefill, decode_end ...)
    components: dict[str, float]  # GiB, adding up to peak_gb
    peak_gb: float  # with the fused log-prob, at the chosen knobs
    naive_peak_gb: float  # same knobs, logits materialised
    min_peak_gb: float  # at the smallest knobs
    allocated_gb: float  # live tensors only: comparable with torch.cuda.max_memory_allocated
    fits: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "peak_gb": round(self.peak_gb, 3),
            "naive_peak_gb": round(self.naive_peak_gb, 3),
            "min_peak_gb": round(self.min_peak_gb, 3),
            "allocated_gb": round(self.allocated_gb, 3),
            "fits": self.fits,
            "arm": self.arm,
            "instant": self.instant,
            "components": {k: round(v, 3) for k, v in self.components.items()},
        }


@dataclass
class ArmPlan:
    arm: str
    method: str
    knobs: Knobs
    phases: dict[str, PhasePlan]
    fits: bool
    advice: list[str]
    workload: Workload


@dataclass
class Plan:
    model: str
    gpu_gb: float
    usable_gb: float
    arms: dict[str, ArmPlan]
    parameters: dict[str, int]
    weights_gb: dict[str, float]
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return all(a.fits for a in self.arms.values())

    @property
    def phases(self) -> dict[str, PhasePlan]:
        """Each phase at its most demanding arm."""
        worst: dict[str, PhasePlan] = {}
        for arm in self.arms.values():
            for name, phase in arm.phases.items():
                if name not in worst or phase.peak_gb > worst[name].peak_gb:
                    worst[name] = phase
        return {name: worst[name] for name in PHASES if name in worst}

    @property
    def knobs(self) -> dict[str, Knobs]:
        return {name: arm.knobs for name, arm in self.arms.items()}

    @property
    def advice(self) -> list[str]:
        seen: list[str] = []
        for arm in self.arms.values():
            seen += [a for a in arm.advice if a not in seen]
        return seen

    def knobs_for(self, arm: str) -> Knobs:
        return self.arms[arm].knobs

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "gpu_gb": self.gpu_gb,
            "usable_gb": round(self.usable_gb, 3),
            "fits": self.fits,
            "phases": {name: phase.to_json() for name, phase in self.phases.items()},
            "knobs": {name: knobs.to_json() for name, knobs in self.knobs.items()},
            "arms": {
                name: {"method": arm.method, "fits": arm.fits, "knobs": arm.knobs.to_json(),
                       "peak_gb": round(max(v.peak_gb for v in arm.phases.values()), 3),
                       "min_peak_gb": round(max(v.min_peak_gb for v in arm.phases.values()), 3),
                       "phases": {p: v.to_json() for p, v in arm.phases.items()}, "advice": arm.advice}
                for name, arm in self.arms.items()
            },
            "parameters": self.parameters,
            "weights_gb": {k: round(v, 3) for k, v in self.weights_gb.items()},
            "advice": self.advice,
            "notes": self.notes,
            "assumptions": {
                "safety_margin": SAFETY_MARGIN,
                "cuda_context_gb": CUDA_CONTEXT_GIB,
                "fragmentation": FRAGMENTATION,
                "adapter_bytes": ADAPTER_BYTES,
                "nf4_double_quant": NF4_DOUBLE_QUANT,
                "unit": "GiB (2^30 bytes)",
            },
        }


def _phase_plan(work: Workload, phase: str, knobs: Knobs, usable_gb: float) -> PhasePlan:
    instant, tensors = tensor_peak_bytes(work, phase, knobs)
    components = {k: v / GIB for k, v in instant.components.items()}
    components["fragmentation"] = tensors * FRAGMENTATION / GIB
    components["cuda_context"] = CUDA_CONTEXT_GIB
    peak = device_peak_gb(tensors)
    return PhasePlan(
        name=phase,
        arm=work.arm,
        instant=instant.name,
        components=components,
        peak_gb=peak,
        naive_peak_gb=phase_peak_gb(work, phase, knobs, naive=True),
        min_peak_gb=phase_peak_gb(work, phase, floor_knobs(work)),
        allocated_gb=tensors / GIB,
        fits=peak <= usable_gb,
    )


def plan_workload(work: Workload, gpu_gb: float) -> ArmPlan:
    usable = gpu_gb * (1 - SAFETY_MARGIN)
    knobs, fits = choose_knobs(work, usable)
    phases = {p: _phase_plan(work, p, knobs, usable) for p in work.phases}
    advice: list[str] = []
    if not fits:
        for name, phase in phases.items():
            if not phase.fits:
                advice += [a for a in advice_for(work, name, usable) if a not in advice]
        frozen = sum(frozen_weight_bytes(work).values()) / GIB
        if frozen + CUDA_CONTEXT_GIB > usable:
            advice.append(f"the frozen model alone needs {frozen:.1f} GiB: use a GPU with more memory")
    return ArmPlan(work.arm, work.method, knobs, phases, fits and all(p.fits for p in phases.values()), advice, work)


def plan(recipe, gpu_gb: float, arm: str | None = None) -> Plan:
    """Peak GPU memory of every phase of every arm (or only `arm`) on a `gpu_gb` GiB GPU."""
    if isinstance(recipe, dict):
        from lite_cpt.recipe import recipe_from_dict

        recipe = recipe_from_dict(recipe)
    if gpu_gb <= 0:
        raise UserError(f"--gpu-gb must be positive, got {gpu_gb}")
    arms = recipe.arms
    if arm is not None:
        arms = [a for a in arms if a.name == arm]
        if not arms:
            raise UserError(f"recipe has no arm '{arm}' (arms: {', '.join(a.name for a in recipe.arms)})")
    shape = resolve_shape(recipe.model)
    works = [workload_of(recipe, a) for a in arms]
    _, notes = image_tokens_of(recipe)
    layout = lora_layout(shape, recipe.model.lora.r, recipe.model.lora.target_modules)
    if layout.vision_adapted or layout.head_adapted:
        notes.append("adapters on the vision tower or lm_head: their activations are not modelled")
    parameters = {**parameter_counts(shape), "total": total_parameters(shape), "lora": layout.parameters}
    return Plan(
        model=shape.name,
        gpu_gb=gpu_gb,
        usable_gb=gpu_gb * (1 - SAFETY_MARGIN),
        arms={w.arm: plan_workload(w, gpu_gb) for w in works},
        parameters=parameters,
        weights_gb={k: v / GIB for k, v in frozen_weight_bytes(works[0]).items()},
        notes=notes,
    )


def gpu_memory_gb() -> float | None:
    """Total memory of the current CUDA device in GiB, or None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB


def resolve_knobs(recipe, arm: str, gpu_gb: float | None = None) -> Knobs:
    """Knobs for training `arm`: planned for this GPU (or `gpu_gb`); on CPU, memory is not the
    limit, so the micro-batch is the whole batch and generation takes all prompts at once."""
    gpu_gb = gpu_gb if gpu_gb is not None else gpu_memory_gb()
    work = workload_of(recipe, next(a for a in recipe.arms if a.name == arm))
    if gpu_gb is None:
        mb = work.micro_batch_size or work.max_micro_batch
        return Knobs(mb, default_logprob_chunk(mb * max(work.answer_tokens, work.new_tokens), work.shape.vocab),
                     work.prompts_per_step)
    return plan_workload(work, gpu_gb).knobs


# --------------------------------------------------------------------------------------------
# Output


COMPONENT_LABELS = {
    "frozen_weights": "frozen base",
    "lora_weights": "LoRA weights",
    "lora_grads": "LoRA grads",
    "optimizer_states": "AdamW m, v",
    "ewc_state": "EWC state",
    "optimizer_step": "AdamW step temps",
    "batch_inputs": "inputs + masks",
    "rollout_buffers": "rollout buffers",
    "vision_encoder": "vision encoder",
    "activations_stored": "act. checkpoints",
    "activations_layer": "act. one layer",
    "logprob": "log-prob buffers",
    "grpo_loss": "GRPO loss",
    "kv_cache": "KV cache",
    "generation_transient": "forward working",
    "fragmentation": "allocator slack",
    "cuda_context": "CUDA context",
}


def render_plan(plan: Plan, console) -> None:
    """A rich table: components x phases, peaks fused / naive / at the smallest knobs, knobs."""
    from rich.table import Table

    counts = plan.parameters
    console.print(
        f"[bold]{plan.model}[/]: {counts['total'] / 1e9:.2f} B parameters, LoRA {counts['lora'] / 1e6:.1f} M; "
        f"GPU {plan.gpu_gb:g} GiB, usable {plan.usable_gb:.1f} GiB ({SAFETY_MARGIN:.0%} kept free)"
    )
    weights = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in plan.weights_gb.items())
    console.print(f"frozen weights (GiB): {weights}")
    phases = plan.phases
    table = Table(title="peak GPU memory per phase (GiB)", padding=(0, 1))
    table.add_column("component", no_wrap=True)
    for name in phases:
        table.add_column(name, justify="right")
    table.add_row("[dim]arm", *[f"[dim]{p.arm}" for p in phases.values()])
    table.add_row("[dim]moment of peak", *[f"[dim]{p.instant}" for p in phases.values()])
    keys = [k for k in COMPONENT_LABELS if any(k in p.components for p in phases.values())]
    for key in keys:
        cells = [f"{p.components[key]:.2f}" if key in p.components else "" for p in phases.values()]
        table.add_row(COMPONENT_LABELS[key], *cells)
    table.add_section()
    table.add_row("[bold]peak", *[
        f"[bold {'green' if p.fits else 'red'}]{p.peak_gb:.2f}" for p in phases.values()])
    table.add_row("naive logits peak", *[f"{p.naive_peak_gb:.2f}" for p in phases.values()])
    table.add_row("min-knobs peak", *[f"{p.min_peak_gb:.2f}" for p in phases.values()])
    console.print(table)
    console.print("[dim]peak: fused log-prob at the chosen knobs; naive: tokens x vocab logits "
                  "materialised; min-knobs: micro-batch 1, smallest chunk, one prompt per generate; "
                  "act.: activations.")
    knobs = Table(title="knobs per arm")
    for column in ("arm", "method", "micro_batch", "logprob_chunk", "rollout_batch", "fits"):
        knobs.add_column(column)
    for arm in plan.arms.values():
        knobs.add_row(arm.arm, arm.method, str(arm.knobs.micro_batch_size), str(arm.knobs.logprob_chunk),
                      str(arm.knobs.rollout_batch_size) if arm.method in RFT_METHODS else "-",
                      "yes" if arm.fits else "[red]no")
    console.print(knobs)
    for arm in plan.arms.values():
        name, phase = max(arm.phases.items(), key=lambda item: item[1].min_peak_gb)
        console.print(f"{arm.arm}: needs at least {phase.min_peak_gb:.1f} GiB ({name} at the smallest knobs)")
    verdict = "fits" if plan.fits else "does NOT fit"
    console.print(f"[bold]{verdict}[/] on a {plan.gpu_gb:g} GiB GPU.")
    for line in plan.advice:
        console.print(f"  - {line}")
    for note in plan.notes:
        console.print(f"[dim]note: {note}")


def plan_recipe_file(path: str | Path, overrides: list[str] | None, gpu_gb: float, as_json: bool) -> int:
    """`lite-cpt plan`: load a recipe, print its plan (table or JSON); exit code 1 if it won't fit."""
    from rich.console import Console

    from lite_cpt.recipe import load_recipe

    recipe = load_recipe(path, overrides or [], check_data=False)
    result = plan(recipe, gpu_gb)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        render_plan(result, Console())
    return 0 if result.fits else 1


__all__ = [
    "GIB", "Knobs", "ModelShape", "Plan", "PhasePlan", "QWEN25_VL_3B", "QWEN25_VL_7B", "Workload",
    "choose_knobs", "gpu_memory_gb", "lora_parameters", "parameter_counts", "phase_peak_gb", "plan",
    "plan_recipe_file", "render_plan", "resolve_knobs", "resolve_shape", "total_parameters", "workload_of",
]
