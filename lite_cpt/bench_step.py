"""`lite-cpt bench step`: the measured peak GPU memory of one SFT step and one GRPO step
(rollouts, old/reference log-prob passes, loss backward) next to the planner's estimate.

The model is the real Qwen2.5-VL architecture built from its config with random weights: no
download. The language model's linear layers are quantised to NF4 with bitsandbytes one decoder
layer at a time (so building never holds the whole model in bf16), LoRA is added with peft on
the same modules as a recipe's default, and gradient checkpointing is on: the setup the planner
models. Peaks are `torch.cuda.max_memory_allocated` per phase, compared with the plan's live
tensor bytes (`allocated_gb`, which leaves out the CUDA context and allocator slack).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from lite_cpt.errors import UserError
from lite_cpt.planner import (
    DEFAULT_LORA_TARGETS,
    GIB,
    KNOWN_SHAPES,
    Knobs,
    ModelShape,
    default_logprob_chunk,
    phase_peak_gb,
    seven_b_config,
    tensor_peak_bytes,
    workload_of,
)
from lite_cpt.planner.shapes import QWEN_TOKEN_IDS, token_ids

BENCH_LORA_R = 64
BENCH_LORA_ALPHA = 128
BENCH_SEED = 0
LM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MEASURED_PHASES = ("sft_step", "rollout", "logprob_pass", "grpo_step")


# --------------------------------------------------------------------------------------------
# The recipe the planner sees (CPU-testable)


def bench_recipe(model: str = "7b", *, group_size: int = 8, prompt_tokens: int = 1024, image_tokens: int = 256,
                 answer_tokens: int = 512, micro_batch_size: int = 1, shape: ModelShape | None = None):
    """The recipe whose plan describes the bench: one task, an SFT arm and an RFT arm with one
    prompt per step, micro-batches of `micro_batch_size` sequences, one prompt per generate."""
    from lite_cpt.recipe import recipe_from_dict

    shape = shape or KNOWN_SHAPES[model]
    raw = {
        "name": "bench-step",
        "model": {
            "name": shape.name, "quantization": "nf4", "gradient_checkpointing": True,
            "max_pixels": image_tokens * shape.pixels_per_image_token,
            "lora": {"r": BENCH_LORA_R, "alpha": BENCH_LORA_ALPHA},
        },
        "tasks": [{"name": "bench", "type": "bench", "max_prompt_tokens": prompt_tokens,
                   "max_answer_tokens": answer_tokens}],
        "arms": [
            {"name": "sft", "batch_size": micro_batch_size, "micro_batch_size": micro_batch_size},
            {"name": "rft", "micro_batch_size": micro_batch_size,
             "rft": {"group_size": group_size, "prompts_per_step": 1, "max_new_tokens": answer_tokens}},
        ],
    }
    return recipe_from_dict(raw, "bench step")


def planned(recipe, shape: ModelShape | None = None) -> dict[str, dict[str, Any]]:
    """Plan of the bench recipe per measured phase: live tensor GiB, device peak, knobs, naive."""
    out = {}
    for arm in recipe.arms:
        work = workload_of(recipe, arm, shape)
        knobs = Knobs(work.micro_batch_size, _chunk_for(work), 1)
        for phase in work.phases:
            if phase not in MEASURED_PHASES:
                continue
            _, tensors = tensor_peak_bytes(work, phase, knobs)
            _, naive = tensor_peak_bytes(work, phase, knobs, naive=True)
            out[phase] = {"allocated_gb": tensors / GIB, "naive_allocated_gb": naive / GIB,
                          "peak_gb": phase_peak_gb(work, phase, knobs), "logprob_chunk": knobs.logprob_chunk}
    return out


def _chunk_for(work) -> int:
    tokens = work.micro_batch_size * (work.new_tokens if work.is_rft else work.answer_tokens)
    return default_logprob_chunk(tokens, work.shape.vocab)


# --------------------------------------------------------------------------------------------
# Model and inputs


def _quantize_linears(layer, compute_dtype) -> None:
    """Replace the LM linears of one decoder layer by NF4 (double-quantised) bitsandbytes layers."""
    import bitsandbytes as bnb
    import torch

    for name, child in list(layer.named_modules()):
        if not (isinstance(child, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LM_LINEARS):
            continue
        parent_name, attr = name.rsplit(".", 1)
        quantized = bnb.nn.Linear4bit(
            child.in_features, child.out_features, bias=child.bias is not None,
            compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4", device="meta",
        )
        weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                   quant_type="nf4", module=quantized)
        quantized.weight = weight.to(child.weight.device)  # quantises on the way
        if child.bias is not None:
            quantized.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
        setattr(layer.get_submodule(parent_name), attr, quantized)


def build_random_model(config, *, device, quantize: bool = True, lora_r: int = BENCH_LORA_R,
                       lora_alpha: int = BENCH_LORA_ALPHA, gradient_checkpointing: bool = True, seed: int = BENCH_SEED,
                       dtype=None):
    """A peft-wrapped random Qwen2.5-VL on `device`: bf16 weights (or `dtype`), NF4 LM linears (`quantize`),
    LoRA on the recipe's default targets, non-reentrant gradient checkpointing.

    Built on the meta device, then materialised part by part: everything but the decoder layers
    first, then each decoder layer on its own, quantised before the next one is made.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    dtype = dtype or torch.bfloat16
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    for param in model.parameters():  # parameters only: rope buffers stay fp32, as when loading
        param.data = param.data.to(dtype)
    language_model = model.model.language_model
    layers = list(language_model.layers)
    language_model.layers = torch.nn.ModuleList()
    model.to_empty(device=device)
    model.initialize_weights()
    for layer in layers:
        layer.to_empty(device=device)
        for module in layer.modules():
            model._init_weights(module)
        if quantize:
            _quantize_linears(layer, dtype)
        language_model.layers.append(layer)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.requires_grad_(False)
    if quantize:
        model.is_loaded_in_4bit = True  # peft picks its bitsandbytes LoRA layers by this flag
    ids = token_ids(config.text_config.vocab_size)
    model.generation_config.pad_token_id = ids["pad"]
    model.generation_config.eos_token_id = ids["eos"]
    peft_model = get_peft_model(model, LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=DEFAULT_LORA_TARGETS,
        bias="none", task_type="CAUSAL_LM",
    ))
    if gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.enable_input_require_grads()
    return peft_model


def _image_grid(image_tokens: int, merge: int) -> tuple[int, int]:
    """(h, w) in patches with (h/merge)·(w/merge) == image_tokens, as square as possible."""
    rows = max(d for d in range(1, int(image_tokens**0.5) + 1) if image_tokens % d == 0)
    return rows * merge, (image_tokens // rows) * merge


def bench_inputs(config, *, prompt_tokens: int, image_tokens: int, device, seed: int = BENCH_SEED,
                 dtype=None) -> dict:
    """One prompt of `prompt_tokens` tokens: text, <vision_start>, image pads, <vision_end>, text;
    with random pixel values for an image of `image_tokens` merged tokens."""
    import torch

    vision = config.vision_config
    ids = token_ids(config.text_config.vocab_size)
    text_tokens = prompt_tokens - image_tokens - 2
    if text_tokens < 2:
        raise UserError(f"prompt_tokens ({prompt_tokens}) must exceed image_tokens ({image_tokens}) + 3")
    generator = torch.Generator().manual_seed(seed)
    text_vocab = min(config.text_config.vocab_size - 8, QWEN_TOKEN_IDS["pad"])
    text = torch.randint(0, text_vocab, (text_tokens,), generator=generator)
    head = text_tokens // 2
    prompt = torch.cat([
        text[:head], torch.tensor([ids["vision_start"]]), torch.full((image_tokens,), ids["image"]),
        torch.tensor([ids["vision_end"]]), text[head:],
    ]).unsqueeze(0)
    grid_h, grid_w = _image_grid(image_tokens, vision.spatial_merge_size)
    patch_values = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn(grid_h * grid_w, patch_values, generator=generator)
    return {
        "input_ids": prompt.to(device),
        "attention_mask": torch.ones_like(prompt).to(device),
        "pixel_values": pixels.to(device=device, dtype=dtype or torch.bfloat16),
        "image_grid_thw": torch.tensor([[1, grid_h, grid_w]]).to(device),
    }


def _batch_of(inputs: dict, sequences) -> dict:
    """The model inputs for `sequences` [B, T] that all carry the prompt's image."""
    import torch

    count = sequences.shape[0]
    return {
        "input_ids": sequences,
        "attention_mask": torch.ones_like(sequences),
        "pixel_values": inputs["pixel_values"].repeat(count, 1),
        "image_grid_thw": inputs["image_grid_thw"].repeat(count, 1),
    }


def completion_logprobs(model, batch: dict, prompt_len: int, *, chunk: int | None, naive: bool,
                        all_positions: bool = False):
    """log p of every token after the prompt: [B, T - prompt_len] fp32.

    fused: `fused_linear_logprob` over the completion positions' hidden states. naive: the
    lm_head's logits, fp32 log_softmax and a gather; `all_positions` computes logits for every
    position first, as a transformers forward with labels does.
    """
    import torch

    from lite_cpt.kernels import fused_linear_logprob

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = inner.model(**batch, use_cache=False).last_hidden_state
    targets = batch["input_ids"][:, prompt_len:]
    head = inner.get_output_embeddings()
    if naive:
        start = 0 if all_positions else prompt_len - 1
        logits = head(hidden[:, start:-1]).float()
        logp = torch.log_softmax(logits, dim=-1)[:, prompt_len - 1 - start:]
        return logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return fused_linear_logprob(hidden[:, prompt_len - 1 : -1], head.weight, targets, chunk_size=chunk)


# --------------------------------------------------------------------------------------------
# The measured steps


Measure = Callable[[Callable[[], Any]], tuple[Any, float, float]]


def cuda_measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, peak allocated bytes, seconds) of `fn` on the current CUDA device."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, float(torch.cuda.max_memory_allocated()), time.perf_counter() - start


def _recorder(results: dict, measure: Measure, optimizer) -> Callable[[str, Callable[[], Any]], Any]:
    """`record(name, fn)`: run `fn` under `measure`, store {"bytes", "seconds"} (or the OOM) in results."""
    import torch

    def record(name: str, fn: Callable[[], Any]) -> Any:
        try:
            value, peak, seconds = measure(fn)
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            results[name] = {"bytes": None, "seconds": None, "error": "out of memory"}
            return None
        results[name] = {"bytes": peak, "seconds": seconds}
        return value

    return record


def run_step_phases(model, inputs: dict, *, group_size: int, answer_tokens: int, micro_batch_size: int,
                    chunks: dict[str, int], measure: Measure, naive: bool = True) -> dict[str, dict[str, Any]]:
    """Run and measure an SFT step and a GRPO step; returns {phase: {"bytes", "seconds"}}.

    An unmeasured SFT step first creates AdamW's state, as in every step after the first. The
    GRPO step: G rollouts (sampled to exactly `answer_tokens`), the old-policy and reference
    (adapter disabled) log-prob passes, then the clipped loss with k3 KL, backward, AdamW step.
    """
    import torch

    vocab = model.get_base_model().config.text_config.vocab_size
    ids = token_ids(vocab)
    prompt_len = inputs["input_ids"].shape[1]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    generator = torch.Generator().manual_seed(BENCH_SEED)
    device = inputs["input_ids"].device
    answer = torch.randint(0, min(vocab - 8, ids["pad"]), (1, answer_tokens), generator=generator).to(device)
    sft_batch = _batch_of(inputs, torch.cat([inputs["input_ids"], answer], dim=1).repeat(micro_batch_size, 1))
    results: dict[str, dict[str, Any]] = {}
    record = _recorder(results, measure, optimizer)

    def sft_step(use_naive: bool) -> None:
        logp = completion_logprobs(model, sft_batch, prompt_len, chunk=chunks["sft_step"], naive=use_naive,
                                   all_positions=True)
        (-logp.mean()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    sft_step(False)  # warm-up: AdamW state exists from here on
    record("sft_step", lambda: sft_step(False))
    if naive:
        record("sft_step_naive", lambda: sft_step(True))
    _grpo_phases(model, inputs, optimizer, record, dict(group_size=group_size, answer_tokens=answer_tokens,
                 micro_batch_size=micro_batch_size, chunk=chunks["grpo_step"], naive=naive, generator=generator))
    return results


def _grpo_phases(model, inputs: dict, optimizer, record, settings: dict) -> None:
    """Rollouts, the old/reference log-prob passes and the GRPO update, each under `record`."""
    import torch

    from lite_cpt.kernels import grpo_advantages, grpo_loss

    g, mb, chunk = settings["group_size"], settings["micro_batch_size"], settings["chunk"]
    ids = token_ids(model.get_base_model().config.text_config.vocab_size)
    prompt_len = inputs["input_ids"].shape[1]

    def rollout():
        model.eval()
        with torch.no_grad():
            out = model.generate(
                **inputs, do_sample=True, temperature=1.0, top_p=0.99, top_k=0,
                max_new_tokens=settings["answer_tokens"], min_new_tokens=settings["answer_tokens"],
                num_return_sequences=g, pad_token_id=ids["pad"], eos_token_id=ids["eos"],
            )
        model.train()
        return out

    sequences = record("rollout", rollout)
    if sequences is None:
        return
    micro = [sequences[i : i + mb] for i in range(0, g, mb)]

    def logprob_pass():
        old, ref = [], []
        with torch.no_grad():
            for seqs in micro:
                batch = _batch_of(inputs, seqs)
                old.append(completion_logprobs(model, batch, prompt_len, chunk=chunk, naive=False))
                with model.disable_adapter():
                    ref.append(completion_logprobs(model, batch, prompt_len, chunk=chunk, naive=False))
        return old, ref

    passes = record("logprob_pass", logprob_pass)
    if passes is None:
        return
    rewards = torch.rand(g, generator=settings["generator"]).to(sequences.device)
    advantages = grpo_advantages(rewards, g).split(mb)

    def grpo_step(use_naive: bool) -> None:
        for seqs, old_mb, ref_mb, adv_mb in zip(micro, *passes, advantages):
            logp = completion_logprobs(model, _batch_of(inputs, seqs), prompt_len, chunk=chunk, naive=use_naive)
            loss, _ = grpo_loss(logp, old_mb, adv_mb, torch.ones_like(logp), ref_logp=ref_mb, beta=0.01)
            (loss * seqs.shape[0] / g).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    record("grpo_step", lambda: grpo_step(False))
    if settings["naive"]:
        record("grpo_step_naive", lambda: grpo_step(True))


# --------------------------------------------------------------------------------------------
# The command


def bench_step(json_path: str | Path | None = None, model: str = "7b", group_size: int = 8,
               prompt_tokens: int = 1024, image_tokens: int = 256, answer_tokens: int = 512,
               micro_batch_size: int = 1) -> dict:
    """Measure one SFT and one GRPO step of the random-weight model on CUDA; print measured vs
    planned per phase and fused vs naive log-prob; write JSON to `json_path` when given."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("bench step needs a CUDA GPU (it measures real peak GPU memory)")
    if group_size < 2:
        raise UserError(f"--group-size must be at least 2, got {group_size}")
    config = seven_b_config(model)
    recipe = bench_recipe(model, group_size=group_size, prompt_tokens=prompt_tokens, image_tokens=image_tokens,
                          answer_tokens=answer_tokens, micro_batch_size=micro_batch_size)
    plan = planned(recipe)
    device = torch.device("cuda")
    start = time.perf_counter()
    peft_model = build_random_model(config, device=device)
    build_seconds = time.perf_counter() - start
    inputs = bench_inputs(config, prompt_tokens=prompt_tokens, image_tokens=image_tokens, device=device)
    measured = run_step_phases(
        peft_model, inputs, group_size=group_size, answer_tokens=answer_tokens, micro_batch_size=micro_batch_size,
        chunks={p: plan[p]["logprob_chunk"] for p in ("sft_step", "grpo_step")}, measure=cuda_measure,
    )
    properties = torch.cuda.get_device_properties(device)
    result = {
        "device": properties.name,
        "gpu_gb": properties.total_memory / GIB,
        "model": KNOWN_SHAPES[model].name,
        "shapes": {"group_size": group_size, "prompt_tokens": prompt_tokens, "image_tokens": image_tokens,
                   "answer_tokens": answer_tokens, "micro_batch_size": micro_batch_size,
                   "lora_r": BENCH_LORA_R},
        "build_seconds": build_seconds,
        "phases": {},
    }
    for phase in MEASURED_PHASES:
        got = measured.get(phase, {})
        row = {
            "measured_gb": None if got.get("bytes") is None else got["bytes"] / GIB,
            "planned_gb": plan[phase]["allocated_gb"],
            "planned_peak_gb": plan[phase]["peak_gb"],
            "seconds": got.get("seconds"),
        }
        if f"{phase}_naive" in measured:
            naive = measured[f"{phase}_naive"]
            row["naive_measured_gb"] = None if naive.get("bytes") is None else naive["bytes"] / GIB
            row["naive_planned_gb"] = plan[phase]["naive_allocated_gb"]
            row["naive_seconds"] = naive.get("seconds")
        if row["measured_gb"]:
            row["planned_over_measured"] = row["planned_gb"] / row["measured_gb"]
        result["phases"][phase] = row
    if json_path is not None:
        from lite_cpt.io import atomic_write_json

        atomic_write_json(Path(json_path), result)
    return result


__all__ = [
    "bench_inputs", "bench_recipe", "bench_step", "build_random_model", "completion_logprobs",
    "planned", "run_step_phases",
]
