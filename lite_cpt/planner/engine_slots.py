"""The vLLM engine's slots and the trainer's offload in the time plan (rollout.backend vllm):
how many sequences the engine decodes at once, and what moving the trainer's state to host
memory around each engine call costs. `timeplan` prices the phases with them; `engine` sizes
the KV cache they read."""

from __future__ import annotations

from lite_cpt.planner.bytes import offload_bytes
from lite_cpt.planner.calibration import Calibration
from lite_cpt.planner.workload import Workload

#: Sequences a continuous-batching backend (vLLM) keeps decoding at once when the size of its KV
#: cache is unknown (no GPU size to plan it on): the step cost's saturation point
#: (SATURATING_SEQUENCES of the planner's workload). With a GPU size the engine's KV cache decides
#: (`engine_slots`).
CONTINUOUS_SLOTS = 64
#: vLLM's KV cache block on CUDA (tokens): the cache is a whole number of blocks, and the prefix
#: cache shares whole blocks only.
KV_BLOCK_TOKENS = 16


def engine_slots(kv_tokens: int, max_num_seqs: int, tokens_per_sequence: float) -> int:
    """Sequences the engine decodes at once: min(max_num_seqs, KV tokens // tokens per sequence)."""
    return min(max_num_seqs, int(kv_tokens // max(1.0, tokens_per_sequence)))


def continuous_slots(counts, tokens_per_sequence: float, static_per_call: int) -> int:
    """Slots of the continuously batched engine for sequences of `tokens_per_sequence` expected
    tokens (`counts`: a timeplan.Counts): its KV cache's when planned (at least one: an engine
    without room for one does not start, which the memory plan says), else CONTINUOUS_SLOTS (or
    the static call, if larger)."""
    if counts.engine_kv_tokens is None:
        return max(static_per_call, CONTINUOUS_SLOTS)
    return max(1, engine_slots(counts.engine_kv_tokens, counts.max_num_seqs, tokens_per_sequence))


def offload_seconds(work: Workload, cal: Calibration, phase: str, *, calls: int) -> float:
    """Seconds rollout.offload_trainer spends moving the trainer's state to host memory and back
    around `calls` engine calls of `phase` (0 without it)."""
    return calls * 2 * offload_bytes(work, phase) / (cal.host_copy_gb_per_s * 1e9)
