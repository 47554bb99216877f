"""The workload of one arm: everything about an arm of a recipe that its memory and time depend
on (model shape, sequence lengths, batch sizes, group size), and the knobs the planner chooses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lite_cpt.arms import arm_class
from lite_cpt.arms.rl.settings import rl_settings
from lite_cpt.train.phase import PHASES, Knobs  # noqa: F401  (re-exported: the planner's phases and knobs)
from lite_cpt.families import get_family
from lite_cpt.planner.shapes import ModelShape, resolve_lora_targets, resolve_shape


#: Sequences per generate call: decoding is memory-bandwidth bound, each step reads the weights
#: once however many sequences it advances, so more sequences per call are nearly free until
#: their own work (KV-cache reads, matmuls, sampling) approaches the weight reads: about 64 for
#: 3B-7B models (the decode figures of planner/calibration.py). Below that the KV-cache room left
#: on the GPU decides.
SATURATING_SEQUENCES = 64


def arm_phases(method: str) -> tuple[str, ...]:
    """The planner phases an arm method runs, as its class in the arm registry declares them."""
    return arm_class(method).phases


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
    eval_batch: int  # prompts per evaluation generate call (the planner's choice when eval_batch_auto)
    eval_new_tokens: int
    ewc: bool
    # The recipe's token budget per micro-batch: a count, auto (the planner's) or off (a fixed
    # count of micro_batch_size per micro-batch), spelled as the recipe spells it.
    micro_batch_tokens: int | Literal["auto", "off"] = "auto"
    reference_adapter: bool = False  # a frozen second adapter holds the KL reference (previous task)
    eval_batch_auto: bool = False  # left at auto by the recipe and not yet chosen by the planner
    vision_cache_bytes: float = 0.0  # device-resident share of the vision feature cache (training phases)
    # The trainer's state waits in host memory while vLLM generates (rollout.backend vllm with
    # rollout.offload_trainer): only the vision feature cache stays beside the engine's share.
    offload_trainer: bool = False

    @property
    def pack_by_tokens(self) -> bool:
        """Whether micro-batches are filled to a token budget (not `micro_batch_tokens: off`)."""
        return self.micro_batch_tokens != "off"

    @property
    def pinned_token_budget(self) -> int | None:
        """The recipe's own token budget when it gives a number (None: auto or off)."""
        return self.micro_batch_tokens if isinstance(self.micro_batch_tokens, int) else None

    @property
    def is_rft(self) -> bool:
        return "rollout" in self.phases

    @property
    def rollout_group(self) -> int:
        """Sequences per prompt in one generate call: G, or RIF's K when that is larger."""
        return max(self.group_size, self.rif_rollouts)

    @property
    def phases(self) -> tuple[str, ...]:
        return arm_phases(self.method)

    @property
    def max_micro_batch(self) -> int:
        return self.prompts_per_step * self.group_size if self.is_rft else self.batch_size


def image_tokens_of(recipe, shape: ModelShape | None = None) -> tuple[int, list[str]]:
    """Image tokens per prompt (model.max_pixels / the pixels of one merged image token: 784 for
    Qwen2.5-VL, 1024 for Qwen3-VL; none for a text-only model) and notes about how they were bounded."""
    model = recipe.model
    shape = shape or resolve_shape(model)
    if not shape.has_vision:
        return 0, []
    shape_ppt = shape.pixels_per_image_token
    if model.name == "tiny":
        side = -(-model.tiny.image_size // (shape.vision_patch * shape.vision_merge))  # the processor rounds up
        return side**2, []
    longest_prompt = max(t.max_prompt_tokens for t in recipe.tasks)
    default_max_pixels = get_family(shape.family).default_max_pixels
    if model.max_pixels is None:
        note = (
            f"model.max_pixels is unset: the processor allows up to {default_max_pixels // shape_ppt} image "
            f"tokens; the plan assumes images fit in the {longest_prompt}-token prompt. Set "
            f"model.max_pixels ({256 * shape_ppt} = 256 image tokens) to bound them."
        )
        return min(default_max_pixels // shape_ppt, longest_prompt), [note]
    tokens = max(1, model.max_pixels // shape_ppt)
    notes = []
    if tokens > longest_prompt and drops_overlong(recipe):
        notes.append(
            f"model.max_pixels allows {tokens} image tokens, more than tasks.*.max_prompt_tokens "
            f"({longest_prompt}); such prompts are dropped (overlong_prompts: drop), so the plan uses "
            f"{longest_prompt}-token prompts."
        )
        return longest_prompt, notes
    if tokens > longest_prompt:
        notes.append(
            f"model.max_pixels allows {tokens} image tokens, more than tasks.*.max_prompt_tokens "
            f"({longest_prompt}); the plan uses {tokens}-token prompts. Lower model.max_pixels, or drop "
            "such prompts (tasks.*.overlong_prompts=drop)."
        )
    return tokens, notes


def drops_overlong(recipe) -> bool:
    """Whether every task leaves out prompts over its max_prompt_tokens, so none is longer."""
    return all(t.overlong_prompts == "drop" for t in recipe.tasks)


def _fixed(value: Any) -> int | None:
    """A knob the recipe fixes, or None when it is `auto` (or the recipe has no such field)."""
    return None if value in (None, "auto") else int(value)


def workload_of(recipe, arm, shape: ModelShape | None = None) -> Workload:
    """The `Workload` of `arm` (an ArmConfig) in `recipe`, as it would run on a CUDA GPU;
    `shape` replaces the one `model.name` resolves to."""
    model = recipe.model
    shape = shape or resolve_shape(model)
    image_tokens, _ = image_tokens_of(recipe, shape)
    prompt = max(max(t.max_prompt_tokens for t in recipe.tasks), image_tokens)
    rft = rl_settings(arm)
    quant = "nf4" if model.quantization == "auto" else model.quantization
    act_bytes = 4 if model.dtype == "float32" else 2
    return Workload(
        arm=arm.name,
        method=arm.method,
        shape=shape,
        quantization=quant,
        act_bytes=act_bytes,
        lora_r=model.lora.r,
        lora_targets=resolve_lora_targets(shape, model.lora.target_modules),
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
        # auto starts at the most the planner ever takes; `choose_eval_batch` lowers it to what fits
        eval_batch=_fixed(recipe.evaluation.generation.batch_size) or SATURATING_SEQUENCES,
        eval_new_tokens=recipe.evaluation.generation.max_new_tokens,
        ewc=arm.method == "ewc",
        micro_batch_tokens=arm.micro_batch_tokens,
        reference_adapter=holds_reference(arm),
        eval_batch_auto=_fixed(recipe.evaluation.generation.batch_size) is None,
        vision_cache_bytes=vision_cache_bytes(model, shape),
        offload_trainer=recipe.rollout.backend == "vllm" and recipe.rollout.offload_trainer,
    )


def vision_cache_bytes(model, shape: ModelShape) -> float:
    """The vision feature cache's bytes on the GPU during training (`lite_cpt.train.vision_cache`):
    its resident share, where it is on (a vision tower without adapters, a bound above 0)."""
    from lite_cpt.planner.shapes import lora_layout
    from lite_cpt.train.vision_cache import DEVICE_RESIDENT_BYTES

    if not shape.has_vision or model.vision_cache_gb <= 0:
        return 0.0
    if lora_layout(shape, model.lora.r, model.lora.target_modules).vision_adapted:
        return 0.0
    return float(min(DEVICE_RESIDENT_BYTES, model.vision_cache_gb * 2**30))


def holds_reference(arm) -> bool:
    """Whether an arm's GRPO phases keep the KL reference as a second adapter (kl_reference:
    previous_task with the KL on); the adapter then stays on the model for the rest of the run."""
    rft = rl_settings(arm)
    return "rollout" in arm_phases(arm.method) and rft.holds_reference
