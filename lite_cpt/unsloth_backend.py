"""Optional unsloth fast path (`model.backend: unsloth`): one loader, nothing else.

unsloth patches transformers and peft when imported and needs a CUDA GPU, so it is imported
here only, inside the loader, after checking that CUDA is present.
"""

from __future__ import annotations

from lite_cpt.errors import UserError
from lite_cpt.planner import DEFAULT_LORA_TARGETS

UNSLOTH_NEEDS = (
    "the unsloth backend needs a CUDA GPU and `pip install lite-cpt[unsloth]`; "
    "set model.backend: transformers to run without it"
)


def load_with_unsloth(
    model_name: str,
    *,
    max_seq_length: int,
    load_in_4bit: bool,
    lora_cfg,
    gradient_checkpointing: bool,
    dtype=None,
    seed: int = 0,
):
    """(peft model, processor) from unsloth's FastVisionModel, with LoRA already added.

    `lora_cfg` is the recipe's `model.lora`. The default target regex (the language model's
    q/k/v/o/gate/up/down projections) maps onto unsloth's own switches (language layers,
    attention and MLP modules, no vision layers); any other regex is passed through as is.
    """
    import torch

    if not torch.cuda.is_available():  # checked first: importing unsloth on CPU prints and falls back
        raise UserError(UNSLOTH_NEEDS)
    try:
        from unsloth import FastVisionModel
    except ImportError:
        raise UserError(UNSLOTH_NEEDS) from None

    checkpointing = "unsloth" if gradient_checkpointing else False
    model, processor = FastVisionModel.from_pretrained(
        model_name,
        max_seq_length=max_seq_length,
        load_in_4bit=load_in_4bit,
        dtype=dtype,
        use_gradient_checkpointing=checkpointing,
    )
    lora_kwargs = dict(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        bias="none",
        use_gradient_checkpointing=checkpointing,
        random_state=seed,
    )
    if lora_cfg.target_modules in ("auto", DEFAULT_LORA_TARGETS):
        lora_kwargs.update(
            finetune_vision_layers=False,
            finetune_language_layers=True,
            finetune_attention_modules=True,
            finetune_mlp_modules=True,
        )
    else:
        lora_kwargs["target_modules"] = lora_cfg.target_modules
    model = FastVisionModel.get_peft_model(model, **lora_kwargs)
    return model, processor


__all__ = ["UNSLOTH_NEEDS", "load_with_unsloth"]
