"""The timed half of bench_continuous: the tiny model, HF static calls vs vLLM, forced lengths."""

from __future__ import annotations

import os
import tempfile
import time

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from lite_cpt.train.batching import Prompt, chat_text, encode_prompts, tokenizer_of
from lite_cpt.train.rollout import StopTokens, neutral_generation_config, shared_prefill, vision_token_ids

#: head_dim 32 (vLLM's CPU attention needs >= 32).
TINY_SHAPE = dict(hidden_size=64, num_heads=2, num_kv_heads=1)


def tiny_setup(prompt_count: int):
    """(model, processor, saved base directory, prompts) of a random tiny Qwen2.5-VL."""
    from lite_cpt.recipe_model import TinyModelConfig
    from lite_cpt.tiny.model import build_tiny_model, save_tiny_model, tiny_corpus

    model, processor = build_tiny_model(TinyModelConfig(**TINY_SHAPE), tiny_corpus(0))
    base = save_tiny_model(model, processor, os.path.join(tempfile.mkdtemp(), "base"))
    prompts = [Prompt(f"Say something about item {i}.") for i in range(prompt_count)]
    return model.eval(), processor, str(base), prompts


class StopAtLengths(StoppingCriteria):
    """Row i of the call is done once it has `lengths[i]` new tokens (the rest of the call goes on)."""

    def __init__(self, lengths: list[int], width: int):
        self.lengths, self.width = torch.tensor(lengths), width

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids.shape[1] - self.width) >= self.lengths.to(input_ids.device)


@torch.no_grad()
def hf_static_seconds(model, processor, prompts: list[Prompt], group_size: int, lengths: list[int], slots: int
                      ) -> float:
    """Wall seconds of generate calls of `slots` rows (slots / G prompts, one prefill each),
    every row held to its forced length (end of turn suppressed), each call running to its longest."""
    tokenizer = tokenizer_of(processor)
    stops = StopTokens.of(tokenizer)
    per_call = max(1, slots // group_size)
    started = time.perf_counter()
    with neutral_generation_config(model):
        for first in range(0, len(prompts), per_call):
            batch = encode_prompts(processor, prompts[first : first + per_call])
            rows = lengths[first * group_size : (first + len(prompts[first : first + per_call])) * group_size]
            width = batch["input_ids"].shape[1]
            model.generate(**shared_prefill(model, batch, group_size), do_sample=True, temperature=1.0, top_p=1.0,
                           top_k=0, max_new_tokens=max(rows), pad_token_id=stops.pad_id,
                           suppress_tokens=vision_token_ids(tokenizer) + sorted(stops.end_ids),
                           stopping_criteria=StoppingCriteriaList([StopAtLengths(rows, width)]))
    return time.perf_counter() - started


def vllm_timer(base: str, processor, prompts: list[Prompt], group_size: int, lengths: list[int], slots: int):
    """A function that returns the wall seconds of vLLM generating the same rows with `slots`
    slots (the engine is started here, once: start-up is not timed)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    llm = LLM(model=base, dtype="float32", max_num_seqs=slots, max_model_len=128 + max(lengths), seed=0)
    requests, params = [], []
    for index, prompt in enumerate(prompts):
        for sample in range(group_size):
            row = index * group_size + sample
            requests.append({"prompt": chat_text(processor, prompt)})
            params.append(SamplingParams(temperature=1.0, top_p=1.0, max_tokens=lengths[row], min_tokens=lengths[row],
                                         ignore_eos=True, seed=row, detokenize=False))

    def seconds() -> float:
        started = time.perf_counter()
        outputs = llm.generate(requests, params, use_tqdm=False)
        elapsed = time.perf_counter() - started
        assert [len(o.outputs[0].token_ids) for o in outputs] == lengths[: len(outputs)]
        return elapsed

    return seconds
