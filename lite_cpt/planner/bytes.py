"""Byte formulas: the memory of each training phase as a sequence of instants (vision encoder,
layer backward, optimizer step, prefill, end of decoding ...) whose largest is the phase's peak.
Every count is a named formula over the model shape and the workload; the constants below say
what they stand for."""

from __future__ import annotations

from dataclasses import dataclass

from lite_cpt.planner.shapes import lm_linear_shapes, lora_layout, lora_parameters, parameter_counts
from lite_cpt.planner.workload import PHASES, Knobs, Workload

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
    pixels = patches * s.pixel_values_per_patch * (FP32 + b)
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
    pixels = images * work.image_tokens * s.patches_per_image_token * s.pixel_values_per_patch * (FP32 + b)
    return ids + rope + mask + pixels


def rollout_buffer_bytes(work: Workload) -> float:
    """The rollouts of one GRPO step kept on the GPU: ids and masks of prompt+completion, fp32
    per-token old/ref log-probs, masks, advantages, and each prompt's pixel values."""
    seqs = work.prompts_per_step * work.group_size
    seq_len = work.prompt_tokens + work.new_tokens
    pixels = work.prompts_per_step * work.image_tokens * work.shape.patches_per_image_token * work.shape.pixel_values_per_patch * FP32
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
    if work.reference_adapter:
        # The KL reference as a frozen second adapter (fp32 like the policy's, no grads, no
        # optimizer state): held from the first GRPO phase on, through evaluation too.
        state["reference_adapter"] = n * ADAPTER_BYTES
    return state


def micro_batch_shapes(work: Workload, knobs: Knobs, answer: int) -> list[tuple[int, int, int]]:
    """(sequences, tokens per sequence, answer tokens per sequence) of the micro-batches that
    bound a training phase's memory: the longest sequences at the knobs' count, and, with a
    token budget, the longest sequences that fit it and the most sequences it may pack
    (packed_sequences) sharing it."""
    seq_len = work.prompt_tokens + answer
    budget = knobs.micro_batch_tokens
    if budget is None:
        return [(knobs.micro_batch_size, seq_len, answer)]
    longest = (max(1, budget // seq_len), seq_len, answer)
    rows = knobs.packed_sequences or budget
    packed_len = max(1, min(seq_len, budget // rows))
    return [longest, (rows, packed_len, min(answer, packed_len))]


# --------------------------------------------------------------------------------------------
# Phases: each a list of instants, the peak is the largest


@dataclass
class Instant:
    name: str
    components: dict[str, float]  # bytes

    @property
    def total(self) -> float:
        return sum(self.components.values())


def _vision_cache(work: Workload) -> dict[str, float]:
    """The vision feature cache's resident bytes in a training phase (none where it is off)."""
    return {"vision_cache": work.vision_cache_bytes} if work.vision_cache_bytes else {}


def _train_instants(work: Workload, knobs: Knobs, shape: tuple[int, int, int], *, logits_all: bool,
                    extra: dict[str, float], naive: bool) -> list[Instant]:
    """Instants of a forward + backward + optimizer step over one micro-batch of `shape`
    (sequences, tokens each, answer tokens each); `logits_all`: the naive path scores every
    position (SFT) rather than the answer's."""
    s, b = work.shape, work.act_bytes
    mb, seq_len, answer = shape
    tokens = mb * seq_len
    frozen = sum(frozen_weight_bytes(work).values())
    lora = lora_state_bytes(work)
    base = {"frozen_weights": frozen, **lora, **_vision_cache(work), **extra}
    inputs = batch_input_bytes(work, mb, seq_len, mb)
    if work.gradient_checkpointing:
        # Layer inputs kept by the checkpoints, plus the final RMSNorm's fp32 input and output.
        stored = s.layers * tokens * s.hidden * b + tokens * s.hidden * (FP32 + b)
        working = tokens * (layer_saved_bytes_per_token(work) + backward_working_bytes_per_token(work))
    else:
        stored = s.layers * tokens * layer_saved_bytes_per_token(work) + tokens * s.hidden * (FP32 + b)
        working = tokens * backward_working_bytes_per_token(work)
    working += dequant_buffer_bytes(work)
    logprob = logprob_bytes(work, loss_tokens=mb * answer, logit_tokens=mb * (seq_len if logits_all else answer),
                            chunk=knobs.logprob_chunk, train=True, naive=naive)
    backward = Instant("backward", {
        **base, "batch_inputs": inputs, "activations_stored": stored, "activations_layer": working,
        "logprob": logprob,
    })
    vision = Instant("vision_encoder", {**base, "batch_inputs": inputs, "vision_encoder": mb * vision_bytes_per_image(work)})
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


def generation_resident_bytes(work: Workload, phase: str) -> dict[str, float]:
    """What the trainer keeps on the GPU in a phase without gradients (gradients are freed): the
    frozen base, the adapter, the KL reference adapter; in a GRPO phase ("rollout") also the
    vision feature cache and the optimizer state, which lives on between updates."""
    lora = lora_state_bytes(work)
    resident = {"frozen_weights": sum(frozen_weight_bytes(work).values()), "lora_weights": lora["lora_weights"]}
    if "reference_adapter" in lora:
        resident["reference_adapter"] = lora["reference_adapter"]
    if phase == "evaluation":
        return resident
    return {**resident, **_vision_cache(work), "optimizer_states": lora["optimizer_states"]}


def engine_resident_bytes(work: Workload, phase: str) -> dict[str, float]:
    """What the trainer keeps on the GPU while the vLLM engine generates in `phase`: its resident
    state, or with rollout.offload_trainer only the vision feature cache (the rest waits in host
    memory: `offload_bytes`)."""
    resident = generation_resident_bytes(work, phase)
    if work.offload_trainer:
        return {k: v for k, v in resident.items() if k == "vision_cache"}
    return resident


def offload_bytes(work: Workload, phase: str) -> float:
    """Bytes rollout.offload_trainer moves to host memory before each engine call of `phase`
    (and back after it): 0 without it."""
    return sum(generation_resident_bytes(work, phase).values()) - sum(engine_resident_bytes(work, phase).values())


def phase_instants(work: Workload, phase: str, knobs: Knobs, *, naive: bool = False) -> list[Instant]:
    if phase == "sft_step":
        return [instant for shape in micro_batch_shapes(work, knobs, work.answer_tokens)
                for instant in _train_instants(work, knobs, shape, logits_all=True, extra={}, naive=naive)]
    if phase == "grpo_step":
        instants = []
        for shape in micro_batch_shapes(work, knobs, work.new_tokens):
            extra = {"rollout_buffers": rollout_buffer_bytes(work)}
            found = _train_instants(work, knobs, shape, logits_all=False, extra=extra, naive=naive)
            found[0].components["grpo_loss"] = shape[0] * shape[2] * GRPO_LOSS_BYTES_PER_TOKEN
            instants += found
        return instants
    if phase == "rollout":
        return _generation_instants(work, sequences=knobs.rollout_batch_size * work.rollout_group,
                                    prompt=work.prompt_tokens, new=work.new_tokens,
                                    base=generation_resident_bytes(work, phase),
                                    sampling_bytes=SAMPLING_BYTES_PER_LOGIT)
    if phase == "evaluation":
        return _generation_instants(work, sequences=work.eval_batch, prompt=work.prompt_tokens,
                                    new=work.eval_new_tokens, base=generation_resident_bytes(work, phase),
                                    sampling_bytes=GREEDY_BYTES_PER_LOGIT)
    if phase == "logprob_pass":
        base = {**generation_resident_bytes(work, "rollout"), "rollout_buffers": rollout_buffer_bytes(work)}
        return [instant for shape in micro_batch_shapes(work, knobs, work.new_tokens)
                for instant in _logprob_instants(work, knobs, shape, base, naive)]
    raise ValueError(f"unknown phase '{phase}'; phases: {', '.join(PHASES)}")


def _logprob_instants(work: Workload, knobs: Knobs, shape: tuple[int, int, int], base: dict[str, float],
                      naive: bool) -> list[Instant]:
    """Instants of a no-grad log-prob pass over one micro-batch of `shape`."""
    s, b = work.shape, work.act_bytes
    mb, seq_len, answer = shape
    tokens = mb * seq_len
    base = {**base, "batch_inputs": batch_input_bytes(work, mb, seq_len, mb)}
    layers = Instant("layers", {**base, "activations_stored": tokens * s.hidden * b,
                                "generation_transient": tokens * inference_bytes_per_token(work)})
    head = Instant("logprob", {**base, "activations_stored": tokens * s.hidden * b,
                               "logprob": logprob_bytes(work, loss_tokens=mb * answer, logit_tokens=mb * answer,
                                                        chunk=knobs.logprob_chunk, train=False, naive=naive)})
    vision = Instant("vision_encoder", {**base, "vision_encoder": mb * vision_bytes_per_image(work)})
    return [layers, head, vision]


def tensor_peak_bytes(work: Workload, phase: str, knobs: Knobs, *, naive: bool = False) -> tuple[Instant, float]:
    """(the peak instant, its live tensor bytes): what torch.cuda.max_memory_allocated measures."""
    peak = max(phase_instants(work, phase, knobs, naive=naive), key=lambda i: i.total)
    return peak, peak.total


def device_peak_gb(tensor_bytes: float) -> float:
    """Tensor bytes plus allocator slack and the CUDA context, in GiB."""
    return tensor_bytes * (1 + FRAGMENTATION) / GIB + CUDA_CONTEXT_GIB


def phase_peak_gb(work: Workload, phase: str, knobs: Knobs, *, naive: bool = False) -> float:
    return device_peak_gb(tensor_peak_bytes(work, phase, knobs, naive=naive)[1])
