"""The vLLM rollout backend on the tiny Qwen2.5-VL (fp32, CPU): an updated adapter is served
under a fresh id and generates as the trainer's model with the same adapter (greedy); sampled
tokens' log-probs equal the trainer's; a short GRPO phase runs with its rollouts (and TIS).

Runs where vLLM is installed (CI: the environment of .ci/vllm-env.sh); skipped elsewhere."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("vllm")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import torch
from PIL import Image

from lite_cpt.run.continual import reset_adapter
from lite_cpt.models import add_lora
from lite_cpt.train.phase import Example, Knobs, Phase
from lite_cpt.recipe import arm_config
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.recipe_run import RolloutConfig
from lite_cpt.train.policy_update import expanded_micro_batches
from lite_cpt.train.rft import generate_rollouts, train_rft
from lite_cpt.train.rollout import Sampling, generate_completions, rollout_engine, vision_token_ids
from lite_cpt.tasks.base import Sample, Task
from lite_cpt.tiny.model import build_tiny_model, save_tiny_model, tiny_corpus
from lite_cpt.train.tis import sampler_logp_like
from lite_cpt.train.vllm_backend import VllmRollouts

#: vLLM's CPU attention needs head_dim >= 32: 64 hidden over 2 heads.
TINY = TinyModelConfig(hidden_size=64, num_heads=2, num_kv_heads=1)
KNOBS = Knobs(micro_batch_size=8, logprob_chunk=None, rollout_batch_size=8)


class ParityTask(Task):
    """Reward 1 for an answer of odd length: random answers of a group rarely all agree."""

    answer_instruction = ""

    def reward(self, prediction: str, sample: Sample) -> float:
        return float(len(prediction) % 2)


def examples(n: int) -> list[Example]:
    picture = Image.new("RGB", (56, 56), (200, 40, 40))
    return [Example(ParityTask("parity"), Sample(id=str(i), question=f"Say something about item {i}.", answer="a",
                                               images=(picture,) if i % 2 else ())) for i in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, processor = build_tiny_model(TINY, tiny_corpus(0))
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # a sharper head: answers that an adapter can move
    base = save_tiny_model(model, processor, tmp_path_factory.mktemp("vllm") / "base")
    policy = add_lora(model, LoraConfig(r=8, alpha=16))
    engine = VllmRollouts(str(base), processor, lora_rank=8, dtype=torch.float32, quantized=False, max_model_len=512,
                          settings=RolloutConfig(backend="vllm", cpu_kv_cache_gb=1),
                          scratch_dir=tmp_path_factory.mktemp("vllm") / "adapters")
    return policy, processor, engine


def perturb_adapter(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * 0.5)


def test_an_updated_adapter_is_served_under_a_fresh_id(setup):
    model, processor, engine = setup
    reset_adapter(model, seed=0)
    prompts = [e.prompt(False) for e in examples(3)]
    greedy = Sampling(max_new_tokens=6)
    before = engine.generate_completions(model, processor, prompts, greedy)
    served = engine.lora_id
    assert before.token_ids == generate_completions(model, processor, prompts, greedy).token_ids
    engine.generate_completions(model, processor, prompts, greedy)
    assert engine.lora_id == served  # the same weights: the same adapter
    perturb_adapter(model, seed=1)  # a policy update
    after = engine.generate_completions(model, processor, prompts, greedy)
    assert engine.lora_id == served + 1
    assert after.token_ids != before.token_ids
    assert after.token_ids == generate_completions(model, processor, prompts, greedy).token_ids
    assert after.texts == generate_completions(model, processor, prompts, greedy).texts


def test_sampled_tokens_log_probs_equal_the_trainers(setup):
    """vLLM returns log-probs of the distribution it samples from: the trainer's logits with the
    vision markers biased by -100 (the HF path suppresses them too), at the rollout temperature."""
    model, processor, engine = setup
    reset_adapter(model, seed=0)
    perturb_adapter(model, seed=2)
    arm = arm_config(name="rft", rft={"group_size": 3, "prompts_per_step": 2, "max_new_tokens": 6, "cot": False,
                                     "kl": False, "top_p": 1.0, "temperature": 0.7})
    with rollout_engine(engine):
        rollouts = generate_rollouts(model, processor, examples(2), arm.rft, group_size=3, generator_seed=5)
    assert [len(lp) for lp in rollouts.sampler_logp] == [len(ids) for ids in rollouts.token_ids]
    markers = vision_token_ids(processor.tokenizer)
    checked = 0
    with torch.no_grad():
        for mb in expanded_micro_batches(model, processor, rollouts, list(range(6)), torch.zeros(6), arm.rft, KNOBS):
            scored = mb.score(model, temperature=0.7)  # the trainer's log-probs
            logits = model(**mb.batch).logits[:, :-1].float()
            logits[..., markers] -= 100.0
            sampled = torch.log_softmax(logits / 0.7, dim=-1)
            targets = mb.labels[:, 1:].clamp(min=0)
            sampled = sampled.gather(-1, targets[..., None])[..., 0] * scored.mask
            unbiased = torch.log_softmax(model(**mb.batch).logits[:, :-1].float() / 0.7, dim=-1)
            unbiased = unbiased.gather(-1, targets[..., None])[..., 0] * scored.mask
            torch.testing.assert_close(scored.logp * scored.mask, unbiased, atol=1e-5, rtol=0)
            vllm = sampler_logp_like(scored.mask, [rollouts.sampler_logp[r] for r in mb.rows])
            torch.testing.assert_close(vllm * scored.mask, sampled, atol=1e-4, rtol=1e-4)  # fp32 kernels differ
            checked += int(scored.mask.sum())
    assert checked == sum(len(ids) for ids in rollouts.token_ids)
    with rollout_engine(engine):
        again = generate_rollouts(model, processor, examples(2), arm.rft, group_size=3, generator_seed=5)
    assert again.token_ids == rollouts.token_ids  # seeded per request


def test_a_short_grpo_phase_runs_on_vllm_rollouts_with_tis(setup):
    model, processor, engine = setup
    reset_adapter(model, seed=0)
    arm = arm_config(name="rft", lr=2e-2, rft={"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 4,
                                               "cot": False, "kl": False, "tis_cap": 2.0})
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    served = engine.lora_id
    stats = train_rft(model, processor, examples(4), arm, Phase(KNOBS, seed=3, rollout_engine=engine), updates=2)
    assert stats.steps == 2 and stats.generated_tokens > 0
    assert engine.lora_id >= served + 1  # the adapter after the first update was pushed
    assert any(not torch.equal(p, start[n]) for n, p in model.named_parameters() if p.requires_grad)


class GenerateSpy:
    """Records the LoRA request (None: the bare base) and the request count of each engine call."""

    def __init__(self, engine, monkeypatch):
        self.calls: list[tuple] = []
        real = engine.llm.generate

        def generate(requests, params, lora_request=None, **kwargs):
            outputs = real(requests, params, lora_request=lora_request, **kwargs)
            self.calls.append((lora_request, len(requests), sum(len(o.outputs[0].token_ids) for o in outputs)))
            return outputs

        monkeypatch.setattr(engine.llm, "generate", generate)


def read_predictions(path) -> list[dict]:
    import gzip
    import json

    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def test_evaluation_rows_through_the_engine_equal_the_transformers_rows(setup, tmp_path, monkeypatch):
    """Row 0 (adapter disabled) goes to vLLM without a LoRA request; a row after updates with the
    freshly pushed adapter; both give the predictions file transformers gives, byte for byte."""
    from lite_cpt.recipe import load_recipe
    from lite_cpt.run.continual import build_workspace
    from lite_cpt.run.rows import base_row, evaluate_row

    model, processor, engine = setup
    reset_adapter(model, seed=0)
    sizes = [f"tasks.{i}.test_size=3" for i in range(7)] + [f"evaluation.general.{i}.size=3" for i in range(3)]
    recipe = load_recipe("recipes/tiny.yaml", [f"output_dir={tmp_path}", "rollout.backend=vllm", *sizes])
    ws = build_workspace(recipe, loaded=(model, processor))
    ws.rollout_engine = engine
    spy = GenerateSpy(engine, monkeypatch)
    transformers_ws = build_workspace(load_recipe("recipes/tiny.yaml", [f"output_dir={tmp_path}", "name=tiny_hf", *sizes]),
                                      loaded=(model, processor))

    perturb_adapter(model, seed=4)  # row 0 must not see it
    base_row(ws)
    assert [lora for lora, _, _ in spy.calls] == [None]
    with model.disable_adapter():
        evaluate_row(transformers_ws, "base", tmp_path / "hf_row0.jsonl.gz", False)
    assert read_predictions(ws.run_dir / "base_predictions.jsonl.gz") == read_predictions(tmp_path / "hf_row0.jsonl.gz")

    rows = []
    for update in range(2):  # two policy updates, each row evaluated with the adapter just pushed
        perturb_adapter(model, seed=10 + update)
        served = engine.lora_id
        evaluate_row(ws, "rft", tmp_path / f"vllm_row{update}.jsonl.gz", False)
        assert engine.lora_id == served + 1 and spy.calls[-1][0].lora_int_id == engine.lora_id
        evaluate_row(transformers_ws, "rft", tmp_path / f"hf_row{update}.jsonl.gz", False)
        rows.append(read_predictions(tmp_path / f"vllm_row{update}.jsonl.gz"))
        assert rows[-1] == read_predictions(tmp_path / f"hf_row{update}.jsonl.gz")
    base = read_predictions(ws.run_dir / "base_predictions.jsonl.gz")
    assert rows[0] != base and rows[1] != rows[0]  # the rows differ: the adapters were served
    assert [n for _, n, _ in spy.calls] == [30, 30, 30]  # each row: all its sets' prompts in one scheduled call


def test_rif_estimate_runs_on_the_engine_in_one_call_with_the_current_adapter(setup, monkeypatch):
    from lite_cpt.arms import build_arm

    model, processor, engine = setup
    reset_adapter(model, seed=0)
    perturb_adapter(model, seed=6)
    arm = arm_config(name="rif_rft", lr=2e-2, max_steps_per_task=1,
                    rif={"rollouts": 3, "mode": "offline", "budget": "filtered"},
                    rft={"group_size": 3, "prompts_per_step": 2, "max_new_tokens": 4, "cot": False, "kl": False})
    method = build_arm(arm, model, processor, lambda name: [])
    spy = GenerateSpy(engine, monkeypatch)
    stats = method.train(examples(5), Phase(KNOBS, seed=3, rollout_engine=engine))
    (lora, requests, tokens), (rollout_lora, rollout_requests, _) = spy.calls[:2]
    assert (requests, rollout_requests) == (5 * 3, 2 * 3)  # every instance's K answers in one call, then GRPO's
    assert lora is not None and lora.lora_int_id == rollout_lora.lora_int_id  # the adapter before the task
    assert stats.extra["rif_generated_tokens"] == tokens  # the estimate's answers are the engine's


def test_the_calibration_fits_the_engines_decode_on_full_length_calls(setup, monkeypatch):
    """measure_calibration of a recipe on vLLM: the engine's own decode fit beside transformers'
    (CPU widths 2 and 16, 4 steps), from calls where every sequence decodes the full step count
    with the current adapter."""
    from lite_cpt.bench.calibrate import REPEATS, measure_calibration
    from lite_cpt.recipe import load_recipe

    model, processor, engine = setup
    reset_adapter(model, seed=0)
    spy = GenerateSpy(engine, monkeypatch)
    recipe = load_recipe("recipes/tiny.yaml", ["rollout.backend=vllm"], check_data=False)
    cal = measure_calibration(recipe, model, processor, examples=examples(4), new_tokens=4, data_rates=False,
                              engine=engine)
    assert cal.engine_decode_measured["steps"] == 4 and set(cal.engine_decode_measured["step_s"]) == {"2", "16"}
    assert all(seconds > 0 for seconds in cal.engine_decode_measured["step_s"].values())
    assert cal.engine_decode_step_s > 0 and cal.engine_decode_s_per_sequence >= 0
    assert cal.decode_measured["step_s"] != cal.engine_decode_measured["step_s"]  # transformers' fit stays its own
    # per width: a warm-up and REPEATS timed calls at 4 tokens and at 1; every sequence ran its full length
    assert sorted((n, tokens) for _, n, tokens in spy.calls) == sorted(
        (n, n * steps) for n in (2, 16) for steps in (1, 4) for _ in range(1 + REPEATS))
    assert all(lora is not None and lora.lora_int_id == engine.lora_id for lora, _, _ in spy.calls)


def test_a_groups_samples_share_their_prompts_kv_blocks(setup):
    """The G samples of a prompt are G requests with one prompt: vLLM's prefix cache serves the
    prompt's full KV blocks (image included) to all but the first, and prompts with other images
    share nothing. The time plan sizes the engine's slots on this (timeplan.rollout_kv_tokens)."""
    from lite_cpt.train.batching import Prompt, chat_text

    model, processor, engine = setup
    reset_adapter(model, seed=0)
    question = "Describe the picture, its colours and its shapes. " * 12
    prompts = [Prompt(question, (Image.new("RGB", (448, 448), colour),), f"p{i}")
               for i, colour in enumerate([(200, 40, 40), (20, 140, 40)])]
    length = processor(text=[chat_text(processor, prompts[0])], images=list(prompts[0].images),
                       return_tensors="pt")["input_ids"].shape[1]
    block = engine.llm.llm_engine.vllm_config.cache_config.block_size
    assert length >= block, "the prompt must fill at least one KV block to be shared"
    cached, total = engine.prompt_tokens_cached()
    group = 5
    engine.generate_completions(model, processor, prompts, Sampling(group_size=group, max_new_tokens=4, temperature=1.0))
    cached_after, total_after = engine.prompt_tokens_cached()
    assert total_after - total == len(prompts) * group * length
    assert cached_after - cached == len(prompts) * (group - 1) * (length // block) * block


def test_the_trainer_waits_in_host_memory_while_the_engine_generates(setup, monkeypatch):
    """rollout.offload_trainer around every engine call of a GRPO phase (forced onto CPU tensors:
    on CUDA it moves the CUDA ones): while vLLM generates, every parameter of the policy and,
    once the phase's optimizer has state, its moments sit in the offload's host buffers; the
    phase trains to the same weights as without the offload."""
    import functools

    model, processor, engine = setup
    arm = arm_config(name="rft", lr=2e-2, rft={"group_size": 4, "prompts_per_step": 2, "max_new_tokens": 4,
                                               "cot": False, "kl": False})
    assert engine.offload is not None  # on by default

    def train(forced: bool) -> tuple[dict, list]:
        reset_adapter(model, seed=0)
        away = []
        monkeypatch.setattr(engine.offload, "away", functools.partial(type(engine.offload).away, engine.offload,
                                                                      force=forced))
        real = engine.llm.generate

        def generate(*args, **kwargs):
            hosted = {t.data_ptr() for t in engine.offload._host.values()}
            moments = [v for o in engine.offload._optimizers for s in o.state.values() for v in s.values()
                       if isinstance(v, torch.Tensor) and v.dim()]
            away.append((all(p.data_ptr() in hosted for p in model.parameters()),
                         len(moments), all(v.data_ptr() in hosted for v in moments)))
            return real(*args, **kwargs)

        monkeypatch.setattr(engine.llm, "generate", generate)
        train_rft(model, processor, examples(4), arm, Phase(KNOBS, seed=3, rollout_engine=engine), updates=2)
        monkeypatch.setattr(engine.llm, "generate", real)
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, away

    kept, kept_calls = train(forced=False)
    moved, moved_calls = train(forced=True)
    assert [c[0] for c in kept_calls] == [False, False]  # CPU tensors stay where they are
    assert moved_calls[0][0] and moved_calls[1] == (True, moved_calls[1][1], True) and moved_calls[1][1] > 0
    for name in kept:
        torch.testing.assert_close(moved[name], kept[name], rtol=0, atol=0, msg=name)
