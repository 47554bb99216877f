"""Loading the frozen base and its LoRA adapters.

On CUDA the base is 4-bit NF4 (bitsandbytes, double quantisation, bf16 compute) with k-bit
preparation and non-reentrant gradient checkpointing; on CPU it stays unquantised (tests, tiny
model). One copy of the base serves every role: the policy (its adapter on), rollouts, and
the KL reference — either the previous task's policy, held as a frozen second adapter (the
paper's setup), or the base itself (all adapters off).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from lite_cpt.device_policy import device_policy, resolve_device
from lite_cpt.errors import UserError
from lite_cpt.families import Family, family_of_model, resolve_family
from lite_cpt.run.integrity import sealed_directory
from lite_cpt.io import explained_write
from lite_cpt.recipe import Recipe
from lite_cpt.recipe_model import LoraConfig, ModelConfig


def resolve_quantization(cfg: ModelConfig, device: torch.device) -> str:
    if cfg.quantization == "auto":
        return "nf4" if device.type == "cuda" else "none"
    if cfg.quantization != "none" and device.type != "cuda":
        raise UserError(
            f"model.quantization: {cfg.quantization} needs a CUDA GPU (bitsandbytes 4-bit training "
            "does not run on CPU); set model.quantization: none or auto"
        )
    return cfg.quantization


def check_device(cfg: ModelConfig) -> None:
    """Refuse at once a model setting this machine cannot run (a CUDA device or a 4-bit / 8-bit
    base without a GPU, a dtype the GPU cannot run): before any data is checked or weights load."""
    device = resolve_device(cfg)
    if cfg.name != "tiny":  # the tiny base is never quantised
        resolve_quantization(cfg, device)
    device_policy(cfg)


def quantization_config(kind: str, compute_dtype: torch.dtype, keep: tuple[str, ...]):
    """bitsandbytes settings for `kind`; the modules named in `keep` (full module paths, the
    family's `keep_unquantized`) stay unquantised."""
    if kind == "none":
        return None
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("quantised loading needs bitsandbytes: pip install 'lite-cpt[cuda]'") from None
    if kind == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
            # The vision tower and lm_head stay 16-bit: small, and sensitive to quantisation.
            llm_int8_skip_modules=list(keep),
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(keep))


def load_pretrained(path_or_id: str, cfg: ModelConfig):
    """(model, processor) from a local directory or the Hugging Face cache, with the auto classes
    of the model's family (a text-only family's processor is its tokenizer)."""
    import transformers

    family = resolve_family(cfg.model_copy(update={"name": path_or_id}))
    if cfg.backend == "unsloth":
        from lite_cpt.unsloth_backend import load_with_unsloth

        return load_with_unsloth(
            path_or_id,
            max_seq_length=4096,
            load_in_4bit=cfg.quantization in ("auto", "nf4"),
            gradient_checkpointing=cfg.gradient_checkpointing,
            dtype=device_policy(cfg).dtype,  # fp16 below compute capability 8.0
        )
    policy = device_policy(cfg)  # bf16 from compute capability 8.0, fp16 below it, fp32 on a CPU
    device, dtype = policy.device, policy.dtype
    quant = resolve_quantization(cfg, device)
    kwargs = dict(dtype=dtype, quantization_config=quantization_config(quant, dtype, family.keep_unquantized))
    if cfg.attn_implementation != "auto":
        kwargs["attn_implementation"] = cfg.attn_implementation
    if device.type == "cuda":
        kwargs["device_map"] = {"": device.index or 0}
    try:
        processor = load_processor(family, path_or_id, cfg)
        model = getattr(transformers, family.auto_class).from_pretrained(path_or_id, **kwargs)
    except OSError as error:
        raise UserError(
            f"could not load model '{path_or_id}': {error}. Give a local directory in model.name, "
            "or download it first on a networked machine (huggingface-cli download "
            f"{path_or_id})."
        ) from None
    if device.type != "cuda":
        model.to(device)
    # peft's prepare_model_for_kbit_training is deliberately not used: it upcasts every
    # non-quantised weight (embeddings, lm_head, vision tower: ~1.8 B parameters) to fp32,
    # +3.3 GB on the 7B. A frozen base plus non-reentrant checkpointing (add_lora) is enough.
    model.requires_grad_(False)
    return model, processor


def load_processor(family: Family, path_or_id: str, cfg: ModelConfig):
    """The processor of a vision family (image budget from model.min/max_pixels), or the
    tokenizer of a text-only one, left-padded for batched generation."""
    from transformers import AutoProcessor, AutoTokenizer

    if not family.vision:
        return AutoTokenizer.from_pretrained(path_or_id, padding_side="left")
    processor_kwargs = {k: v for k, v in (("min_pixels", cfg.min_pixels), ("max_pixels", cfg.max_pixels)) if v}
    return AutoProcessor.from_pretrained(path_or_id, **processor_kwargs)


def enable_checkpointing(model, enabled: bool) -> None:
    """Non-reentrant gradient checkpointing, and no input-embedding hook.

    transformers' `gradient_checkpointing_enable` calls `enable_input_require_grads`, which
    hooks the input embeddings of every sub-model: the vision tower's patch embedding too. Its
    output would then require grad, and every training micro-batch would recompute and
    backpropagate the frozen tower and keep its inputs. Non-reentrant checkpointing passes
    gradients to the LoRA weights inside a block whatever its inputs (peft notes the same), so
    the hooks are removed.
    """
    if enabled:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.disable_input_require_grads()


def load_base(recipe: Recipe, console=None):
    """The frozen base of a recipe: the cached trained tiny model, or a pretrained checkpoint."""
    cfg = recipe.model
    if cfg.name == "tiny":
        from lite_cpt.tiny.base import ensure_tiny_base

        if resolve_device(cfg).type == "cpu":
            # The tiny model's matmuls are too small to split: one thread is fastest, and more
            # threads spin against any other busy process (measured: 0.7 s vs 52 s for the same
            # 16 SFT steps on 2 loaded cores).
            torch.set_num_threads(1)
        path = ensure_tiny_base(recipe, console=console)
        # The tiny processor fixes its own resolution; quantisation and unsloth are GPU paths.
        tiny_cfg = cfg.model_copy(update={"quantization": "none", "backend": "transformers",
                                          "min_pixels": None, "max_pixels": None})
        model, processor = load_pretrained(str(path), tiny_cfg)
    else:
        model, processor = load_pretrained(cfg.name, cfg)
    model.requires_grad_(False)
    return model, processor


def lora_target_modules(model, pattern: str) -> list[str]:
    """Names of the linear layers the LoRA regex selects (an error when none match); `auto` is
    the model family's language-model linears."""
    regex = re.compile(resolve_lora_targets(model, pattern))
    names = [
        name
        for name, module in model.named_modules()
        if regex.fullmatch(name) and (isinstance(module, torch.nn.Linear) or "Linear" in type(module).__name__)
    ]
    if not names:
        raise UserError(f"model.lora.target_modules '{pattern}' matches no linear layer of the model")
    return names


def resolve_lora_targets(model, pattern: str) -> str:
    """The LoRA regex: `pattern`, or for `auto` the language-model linears of the model's family."""
    return family_of_model(model).lora_targets if pattern == "auto" else pattern


def add_lora(model, cfg: LoraConfig, *, adapter_name: str = "default", gradient_checkpointing: bool = False):
    """A fresh LoRA adapter on `model` (a PeftModel whose base stays frozen); on a base loaded
    by the unsloth backend, unsloth's own `get_peft_model` adds it."""
    from lite_cpt.unsloth_backend import add_unsloth_lora, is_unsloth_model

    if is_unsloth_model(model):
        return add_unsloth_lora(model, cfg)
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=resolve_lora_targets(model, cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    lora_target_modules(model, cfg.target_modules)
    peft_model = get_peft_model(model, peft_cfg, adapter_name=adapter_name)
    enable_checkpointing(peft_model, gradient_checkpointing)
    return peft_model


def save_adapter(model, path: str | Path, extra=None) -> Path:
    """Save the policy's LoRA adapter in PEFT format with a manifest of sizes and checksums,
    atomically (a temporary directory renamed into place); `extra(directory)` may add files (an
    arm's state) before it is sealed. Only the active adapter is written: the frozen reference
    is rebuilt when a phase starts."""
    intact = "the adapters of earlier tasks and the results so far are intact"
    with explained_write(path, intact), sealed_directory(path) as tmp:
        model.save_pretrained(tmp, selected_adapters=[model.active_adapter])
        if extra is not None:
            extra(tmp)
    return Path(path)


def load_adapter_weights(model, path: str | Path) -> None:
    """Load saved adapter weights into an existing PeftModel (same adapter layout)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(path)
    weights = path / "adapter_model.safetensors"
    if not weights.exists():
        raise UserError(f"no adapter found at {weights}")
    set_peft_model_state_dict(model, load_file(str(weights), device=str(next(model.parameters()).device)))

