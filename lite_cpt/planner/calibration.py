"""Calibrations: throughput figures of one GPU for one model size, the time plan's rates.

`Calibration` holds what `lite-cpt bench gpu` measures; `REFERENCE_24GB` is the derived default
for a 24 GB card; `load_calibration` reads a calibration JSON, `check_calibration` refuses figures
that cannot describe the planned model on a GPU, and `calibration_here` decides whether one
describes the running device. How the time plan uses each figure is in `planner/timeplan.py`.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

from lite_cpt.device_names import same_device
from lite_cpt.errors import UserError


@dataclass(frozen=True)
class Calibration:
    """Throughput figures of one GPU for one model size (planner/timeplan.py's docstring says how each is used)."""

    device: str
    model: str  # the model the figures were measured on; other sizes scale by parameter count
    parameters: int  # total parameters of that model
    decode_step_s: float  # one decode step of a generate call, whatever its size
    decode_s_per_sequence: float  # added to a decode step for each sequence in the call
    prefill_tokens_per_s: float  # no-grad forward (prefill, log-prob passes)
    train_tokens_per_s: float  # forward + backward with the recipe's checkpointing
    optimizer_step_s: float
    source: str
    # Mean prompt and SFT-answer lengths of the calibrated recipe's data (its first task), used
    # instead of the plan's estimates for that model: data, not hardware, but the plan's
    # largest source of error on small models.
    prompt_tokens: float | None = None
    answer_tokens: float | None = None
    # Rates of the run's own SFT phase and evaluation on the calibrated recipe's model and data
    # (encoding, scoring and optimizer steps included): used for that model instead of the
    # per-token figures above, which leave those costs out.
    sft_tokens_per_s: float | None = None
    eval_prompts_per_s: float | None = None
    # Fixed seconds of one no-grad forward pass (a prefill, a log-prob pass) and of one
    # forward + backward pass, whatever their size: launches, the vision tower's setup, Python.
    # Small models and small passes are dominated by them. Not scaled with the parameter count.
    prefill_pass_s: float = 0.0
    train_pass_s: float = 0.0
    # Rates of the run's own rollout and log-prob phases on the calibrated recipe's model and
    # data (seconds per rollout; per rollout and no-grad pass, encoding included), measured at
    # the settings `rl_measured_at` = [G, max_new_tokens, prompts per generate call]: used for
    # that model's arms with those settings instead of the generation and prefill model above.
    rollout_s_per_sequence: float | None = None
    logprob_s_per_sequence: float | None = None
    rl_measured_at: list[int] | None = None
    # The faster fused log-prob path on this device ("tile" or "chunked", as `bench kernels`
    # timed them); a run given this calibration uses it. None: not measured, the run uses "tile".
    logprob_path: str | None = None
    # The decode fit's measurements: {"steps": N, "step_s": {sequences per call: seconds per step}}
    decode_measured: dict | None = None
    # Answer lengths of the calibration rollout per task: {task name: [mean tokens, cv]}, from
    # the user's model on the recipe's own prompts (the plan's expected lengths for that model).
    answer_lengths: dict[str, list[float]] | None = None
    # The same decode fit on the vLLM engine (rollout.backend vllm; `bench gpu` measures it when
    # vLLM is installed): one step's fixed cost and its cost per sequence, at exactly `steps`
    # tokens per sequence, and what was measured ({"steps": N, "step_s": {sequences: seconds}}).
    # The plan prices the engine's phases with them on this model, else with the two above.
    engine_decode_step_s: float | None = None
    engine_decode_s_per_sequence: float | None = None
    engine_decode_measured: dict | None = None
    # GB/s of a copy between the GPU and pinned host memory, each way (rollout.offload_trainer
    # moves the trainer's state out before each engine call and back after it). The default is
    # derived: PCIe 4.0 x16 carries 31.5 GB/s, pinned copies reach about two thirds of it.
    host_copy_gb_per_s: float = 20.0

    @property
    def is_reference(self) -> bool:
        """Whether these are the reference card's derived figures (REFERENCE_24GB), not a measurement."""
        return self.device == REFERENCE_24GB.device

    @property
    def on_cpu(self) -> bool:
        return self.device.startswith("cpu")

    def scaled_to(self, parameters: int) -> "Calibration":
        """The figures for a model of `parameters`: work per token grows with the parameter count."""
        if parameters == self.parameters:
            return self
        ratio = parameters / self.parameters
        engine = {} if self.engine_decode_step_s is None else dict(
            engine_decode_step_s=self.engine_decode_step_s * ratio,
            engine_decode_s_per_sequence=self.engine_decode_s_per_sequence * ratio)
        return replace(self, decode_step_s=self.decode_step_s * ratio,
                       decode_s_per_sequence=self.decode_s_per_sequence * ratio, **engine,
                       prefill_tokens_per_s=self.prefill_tokens_per_s / ratio,
                       train_tokens_per_s=self.train_tokens_per_s / ratio)

    @property
    def has_engine_decode(self) -> bool:
        return self.engine_decode_step_s is not None and self.engine_decode_s_per_sequence is not None

    def with_engine_decode(self) -> "Calibration":
        """These figures with the vLLM engine's decode fit in place of transformers' (itself
        when the engine was not measured)."""
        if not self.has_engine_decode:
            return self
        return replace(self, decode_step_s=self.engine_decode_step_s,
                       decode_s_per_sequence=self.engine_decode_s_per_sequence)

    def decode_tokens_per_s(self, sequences: int) -> float:
        return sequences / (self.decode_step_s + sequences * self.decode_s_per_sequence)

    def to_json(self) -> dict:
        return asdict(self)


#: The reference 24 GB card: an RTX 4090 running Qwen2.5-VL-7B as a frozen NF4 base with LoRA
#: r=64 (bf16 compute, HF generate, gradient checkpointing). Derived, not measured here:
#: - decode: bitsandbytes 0.40.0's release notes put the multi-sequence 4-bit path at about
#:   half the speed of 16-bit matmuls (its batch-1 kernel is 4x faster than 16-bit on Ada and
#:   about 8x faster than the multi-batch path); 16-bit weights of the 7B model (15.2 GB) read
#:   at the card's 1,008 GB/s take 15 ms, so 30 ms per step, plus about 1 ms per decoder layer of
#:   launch and Python overhead in HF generate: 0.06 s per step. Per sequence: its KV cache at
#:   1k tokens (57 MB, 0.06 ms), 15 GFLOP of matmuls at a third of the 165 TFLOPS bf16 peak
#:   (0.3 ms) and top-p sampling over 152k logits (0.1 ms): 0.5 ms.
#: - prefill / log-prob passes: 2 FLOP per parameter and token (15.2 GFLOP) at 40 % of peak
#:   minus dequantisation: 4,000 tokens/s.
#: - training: 6 FLOP per parameter and token (forward, recomputed forward, input-gradient
#:   backward of the frozen base) at 35 % of peak: 1,200 tokens/s.
#: - AdamW over 161 M fp32 LoRA parameters: a few GB of memory traffic, 0.01 s.
#: - vLLM's decode (rollout.backend vllm; vLLM < 0.28): the same weight path, since its
#:   bitsandbytes layers call bnb's `matmul_4bit` (vllm 0.27.0, quantization/bitsandbytes.py
#:   `_apply_bnb_4bit`: dequantise, then a 16-bit matmul, for more than one row): 30 ms. The
#:   ~1 ms per layer of launches and Python is gone: the step replays a CUDA graph (4-bit bnb
#:   layers capture since vllm PR #8768, as a custom op in the V1 engine since PR #15611).
#:   Added: the LoRA kernels (shrink and expand on 7 projections x 28 layers, 0.3 GB of adapter
#:   read: 2 ms) and the engine's host work per step that the graph does not hide (scheduling,
#:   input preparation, sampling bookkeeping: 4 ms). 0.036 s per step; per sequence as above.
#: Replace them with `lite-cpt bench gpu --json F` on your card and `lite-cpt plan --calibration F`
#: (with vLLM installed, `--recipe R` measures the engine's decode too).
REFERENCE_24GB = Calibration(
    device="reference 24 GB card (RTX 4090 class), derived figures",
    model="Qwen/Qwen2.5-VL-7B-Instruct",
    parameters=8_292_166_656,
    decode_step_s=0.06,
    decode_s_per_sequence=0.0005,
    prefill_tokens_per_s=4000.0,
    train_tokens_per_s=1200.0,
    optimizer_step_s=0.01,
    source="derived from the RTX 4090 data sheet (1,008 GB/s, 165 TFLOPS bf16) and bitsandbytes 0.40.0's "
           "4-bit inference notes; see lite_cpt/planner/calibration.py",
    engine_decode_step_s=0.036,
    engine_decode_s_per_sequence=0.0005,
)


#: How far a calibration's parameter count may be from the planned model's (the same model
#: counted with or without its tied embeddings, say) before it is another model.
SAME_SIZE_TOLERANCE = 0.05


def check_calibration(cal: Calibration, model: str, parameters: int) -> list[str]:
    """Refuse throughputs that cannot describe a run of `model` (`parameters`) on a GPU: from
    another model size, or measured on a CPU (unless the model is the CPU testbed's tiny one).
    Returns notes: rates that are physically impossible (training, a forward and a backward,
    faster than a forward alone) are flagged, and what the plan assumes."""
    where = f"calibration '{cal.model}' on {cal.device}"
    notes = []
    if cal.train_tokens_per_s > cal.prefill_tokens_per_s:
        # A fit over passes dominated by their fixed cost (a tiny model on a CPU) can do this;
        # on a real model it means the figures are not from one run.
        notes.append(f"{where}: training at {cal.train_tokens_per_s:,.0f} tokens/s is faster than a forward pass "
                     f"({cal.prefill_tokens_per_s:,.0f} tokens/s), which it contains: physically impossible, so "
                     "the hours below are suspect; measure again with `lite-cpt bench gpu --json F`")
    if cal is REFERENCE_24GB:
        if abs(parameters - cal.parameters) > SAME_SIZE_TOLERANCE * cal.parameters:
            notes.append(f"the reference card's figures are derived for {cal.model} and scaled by parameter count "
                         f"to {model}: measure it with `lite-cpt bench gpu --recipe RECIPE --json F`")
        return notes
    if abs(parameters - cal.parameters) > SAME_SIZE_TOLERANCE * parameters:
        raise UserError(f"{where} measured a model of {cal.parameters / 1e9:.2f} B parameters; {model} has "
                        f"{parameters / 1e9:.2f} B. Measure this model: `lite-cpt bench gpu --recipe RECIPE --json F`")
    if cal.on_cpu and model != "tiny":
        raise UserError(f"{where} was measured on a CPU; a plan for {model} on a GPU needs a GPU's figures: "
                        "`lite-cpt bench gpu --recipe RECIPE --json F` on the card")
    return notes


def load_calibration(path: str | Path) -> Calibration:
    """A calibration JSON as `lite-cpt bench gpu` writes it (its `calibration` entry or the
    figures at the top level)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--calibration {path}: no such file (write one with `lite-cpt bench gpu --json {path}`)") from None
    except json.JSONDecodeError as error:
        raise UserError(f"--calibration {path}: not JSON ({error})") from None
    data = data.get("calibration", data)
    names = [f.name for f in fields(Calibration) if f.name in data or f.default is MISSING]
    missing = [n for n in names if n not in data]
    if missing:
        raise UserError(f"--calibration {path}: missing {', '.join(missing)}; rerun `lite-cpt bench gpu --json {path}`")
    return Calibration(**{n: data[n] for n in names})


def device_label(device) -> str:
    """The name a calibration gives a device (`lite-cpt bench gpu`): the CUDA card's name, or
    `cpu`, whatever its thread count."""
    import torch

    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def calibration_here(calibration: Calibration | None, running: str) -> tuple[Calibration | None, str]:
    """The calibration when it describes the running device, else None and the line that says
    why a run prints no time plan."""
    if calibration is not None and same_device(calibration.device, running):
        return calibration, ""
    if calibration is not None:
        return None, (f"no time plan: the calibration describes {calibration.device}, this run is on {running}; "
                      f"measure this device with `lite-cpt bench gpu --json F` and pass --calibration F")
    return None, (f"no time plan: no calibration for this device ({running}); measure it with "
                  f"`lite-cpt bench gpu --json F` and pass --calibration F")
