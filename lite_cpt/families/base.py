"""What lite-cpt needs to know about a model family, stated once per family.

A family adapter says how to load a checkpoint (which transformers auto class), where the
language model's decoder layers are (LoRA targets, the planner's layout), which modules stay
unquantised, how a prompt becomes chat messages and model inputs (images or none), how to build
the offline tiny model of the family, and the sizes the memory planner reads from a config.
Every family is one `Family` value that its module registers with `FAMILIES.register(Family(...))`
(`lite_cpt.families` discovers the modules); the rest of the code asks the family rather than
testing model types.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from lite_cpt.errors import UserError
from lite_cpt.registry import Registry

#: The linear layers of a Qwen-style decoder layer (attention and MLP); LoRA adapts these.
DECODER_LINEARS = "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"


def decoder_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of the linear layers of one decoder layer."""
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    return {
        "self_attn.q_proj": (h, q), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
        "self_attn.o_proj": (q, h), "mlp.gate_proj": (h, i), "mlp.up_proj": (h, i),
        "mlp.down_proj": (i, h),
    }


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a model that memory depends on (vision fields are 0 for a text-only model)."""

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
    family: str = "qwen2_5_vl"
    qkv_bias: bool = True  # Qwen2 attention has q/k/v biases; Qwen3 has none but q/k RMSNorms
    vision_position_embeddings: int = 0  # learned vision position table (Qwen3-VL)
    deepstack_layers: int = 0  # vision layers whose features are merged into the LM (Qwen3-VL)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def has_vision(self) -> bool:
        return self.vision_layers > 0

    @property
    def pixels_per_image_token(self) -> int:
        """An image token is a merge x merge group of patch x patch pixels (784 for Qwen2.5-VL,
        1024 for Qwen3-VL)."""
        return (self.vision_patch * self.vision_merge) ** 2

    @property
    def patches_per_image_token(self) -> int:
        return self.vision_merge**2

    @property
    def pixel_values_per_patch(self) -> int:
        """Channels x temporal patch x patch² values of one flattened patch."""
        return self.vision_in_channels * self.vision_temporal_patch * self.vision_patch**2


@dataclass(frozen=True)
class Family:
    """One model family: the knowledge of it lite-cpt uses, and nothing else.

    `build_tiny(tiny_cfg, corpus) -> (model, processor)` makes the offline random tiny model;
    `shape_from_config(config_dict, name) -> ModelShape` reads the planner's sizes;
    `tiny_shape(tiny_cfg) -> ModelShape` gives the sizes `build_tiny` uses;
    `linear_modules(shape) -> {module name: (in, out)}` lists every linear layer by name;
    `vision_parameters(shape) -> int` counts the vision tower and its projector.
    """

    name: str
    summary: str
    model_types: tuple[str, ...]  # config.json `model_type` values of the family
    id_pattern: str  # regex matched against lower-cased hub ids when no config is at hand
    vision: bool
    auto_class: str  # transformers auto class that loads a checkpoint
    lm_layers: str  # module path of the decoder layers, e.g. model.language_model.layers
    # Modules kept in 16 bits under NF4 / int8, by full module path: transformers 5 skips a
    # module when a name matches its path from the start (`model.visual` covers
    # `model.visual.blocks.0.attn.qkv`) or equals its end (`lm_head`); `visual` alone matches
    # neither, and the whole tower would be quantised.
    keep_unquantized: tuple[str, ...]
    build_tiny: Callable[[Any, list[str]], tuple[Any, Any]]
    shape_from_config: Callable[[dict, str], ModelShape]
    tiny_shape: Callable[[Any], ModelShape]
    linear_modules: Callable[[ModelShape], dict[str, tuple[int, int]]]
    vision_parameters: Callable[[ModelShape], int]
    known_shapes: Mapping[str, ModelShape] = field(default_factory=dict)
    default_max_pixels: int = 0  # processor's image budget when model.max_pixels is unset
    processor_class: str = ""  # the processor class name `AutoProcessor` gives for the family
    tiny_build: int = 1  # bump when build_tiny changes: the family's cached tiny bases are rebuilt

    @property
    def lora_targets(self) -> str:
        """The default LoRA regex: every attention/MLP linear of the language model only."""
        layers = re.escape(self.lm_layers)
        return rf"{layers}\.\d+\.(self_attn|mlp)\.({DECODER_LINEARS})"

    def decoder_and_head(self, model):
        """(decoder returning `last_hidden_state`, output embedding) of a (peft-wrapped) model:
        the fused log-prob reads the hidden state and the lm_head weight, never the logits."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        return inner.model, inner.get_output_embeddings()

    def chat_messages(self, text: str, images: int) -> list[dict]:
        """One user turn: image placeholders first, then the text (a plain string for text models,
        whose chat templates take no content lists)."""
        if not self.vision:
            return [{"role": "user", "content": text}]
        content = [{"type": "image"} for _ in range(images)] + [{"type": "text", "text": text}]
        return [{"role": "user", "content": content}]

    def encode(self, processor, texts: list[str], images: list) -> dict:
        """Tokenised prompts (and pixel values): the processor of a VLM, the tokenizer of a text model."""
        if self.vision:
            return dict(processor(text=texts, images=images or None, return_tensors="pt", padding=True))
        if images:
            raise UserError(
                f"model family '{self.name}' has no vision tower but a prompt carries an image: give a "
                "text-only model only text tasks (no image column), or pick a vision-language family"
            )
        return dict(processor(texts, return_tensors="pt", padding=True, add_special_tokens=False))


#: Every model family by name; filled as `lite_cpt.families` discovers its modules.
FAMILIES: Registry[Family] = Registry("model family")


#: What the Qwen vision-language families (Qwen2.5-VL, Qwen3-VL) share in transformers: the
#: image-text auto class, the language model's layers under model.language_model, and the vision
#: tower and head kept 16-bit under NF4 (full module paths: transformers matches these from the
#: start of a module's name).
QWEN_VL_LAYOUT = dict(
    vision=True,
    auto_class="AutoModelForImageTextToText",
    lm_layers="model.language_model.layers",
    keep_unquantized=("model.visual", "lm_head"),
)
