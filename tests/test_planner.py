"""The planner: parameter counts, monotonic estimates, auto knobs, the acceptance budget,
output formats, and the pieces of `bench step` that run without a GPU."""

import copy
import dataclasses
import json

import pytest
import torch
import yaml
from rich.console import Console

from lite_cpt.errors import UserError
from lite_cpt.planner.shapes import shape_from_hf_config
from lite_cpt.planner import (
    SATURATING_SEQUENCES,
    SATURATING_TOKENS,
    QWEN25_VL_3B,
    QWEN25_VL_7B,
    Knobs,
    ModelShape,
    lora_parameters,
    parameter_counts,
    phase_peak_gb,
    plan,
    resolve_shape,
    total_parameters,
    workload_of,
)
from lite_cpt.cli import plan_recipe_file
from lite_cpt.cli_render import render_plan
from lite_cpt.recipe import recipe_from_dict

# Qwen2.5-VL-7B-Instruct, NF4, LoRA r=64 on every LM linear, checkpointing, G=8, a 1k-token
# prompt with 256 image tokens (max_pixels = 256 * 28 * 28), 512-token answers.
PAPER_LIKE = {
    "name": "paper-like",
    "model": {
        "name": "Qwen/Qwen2.5-VL-7B-Instruct",
        "quantization": "nf4",
        "gradient_checkpointing": True,
        "max_pixels": 256 * 28 * 28,
        "lora": {"r": 64, "alpha": 128},
    },
    "tasks": [
        {"name": "scienceqa", "type": "mini_scienceqa", "max_prompt_tokens": 1024, "max_answer_tokens": 512},
        {"name": "textvqa", "type": "mini_textvqa", "max_prompt_tokens": 1024, "max_answer_tokens": 256},
    ],
    "arms": [
        {"name": "sft", "batch_size": 8},
        {"name": "rft", "rft": {"group_size": 8, "prompts_per_step": 4, "max_new_tokens": 512}},
    ],
    "evaluation": {"generation": {"max_new_tokens": 512, "batch_size": 16}},
}


def paper_like(**changes) -> dict:
    raw = copy.deepcopy(PAPER_LIKE)
    for dotted, value in changes.items():
        node = raw
        *path, last = dotted.split("__")
        for key in path:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value
    return raw


def test_seven_b_parameter_counts_match_hand_arithmetic():
    counts = parameter_counts(QWEN25_VL_7B)
    embed = 152064 * 3584  # 544,997,376, and the same again for the untied lm_head
    # q 3584x3584, k and v 3584x512, o 3584x3584, gate/up/down 3584x18944
    per_layer = 3584 * 3584 + 2 * 3584 * 512 + 3584 * 3584 + 3 * 3584 * 18944  # 233,046,016
    biases = 28 * (3584 + 512 + 512)  # q, k, v biases: 129,024
    norms = 28 * 2 * 3584 + 3584  # 204,288
    patch_embed = 1280 * 3 * 2 * 14 * 14  # 1,505,280
    block = (2 * 1280 + (1280 * 3840 + 3840) + (1280 * 1280 + 1280)
             + 2 * (1280 * 3420 + 3420) + (3420 * 1280 + 1280))  # 19,702,200
    merger = 1280 + (5120 * 5120 + 5120) + (5120 * 3584 + 3584)  # 44,574,464
    vision = patch_embed + 32 * block + merger  # 676,550,144
    assert counts == {
        "embed_tokens": embed, "lm_head": embed, "lm_linear_weights": 28 * per_layer,
        "lm_biases": biases, "lm_norms": norms, "vision": vision,
    }
    assert total_parameters(QWEN25_VL_7B) == 8_292_166_656  # "about 8.29 B"
    # LoRA r=64: r * (in + out) for q, k, v, o, gate, up, down of each of the 28 layers
    per_layer_lora = 64 * (2 * (3584 + 3584) + 2 * (3584 + 512) + 3 * (3584 + 18944))
    assert lora_parameters(QWEN25_VL_7B, 64) == 28 * per_layer_lora == 161_480_704


def test_lora_regex_selects_modules_like_peft():
    attention_only = r".*language_model.*\.(q_proj|v_proj)"
    assert lora_parameters(QWEN25_VL_7B, 8, attention_only) == 28 * 8 * ((3584 + 3584) + (3584 + 512))
    first_layer = r"model\.language_model\.layers\.0\.mlp\.down_proj"
    assert lora_parameters(QWEN25_VL_7B, 4, first_layer) == 4 * (18944 + 3584)


@pytest.mark.parametrize("size, shape", [("7b", QWEN25_VL_7B), ("3b", QWEN25_VL_3B)])
def test_meta_device_model_has_the_analytic_parameter_count(size, shape):
    from lite_cpt.planner.shapes import meta_parameter_count, seven_b_config

    assert meta_parameter_count(seven_b_config(size)) == total_parameters(shape)


def test_model_names_and_configs_resolve_to_shapes(tmp_path):
    from lite_cpt.planner import seven_b_config
    from lite_cpt.recipe_model import ModelConfig

    assert resolve_shape(ModelConfig(name="Qwen/Qwen2.5-VL-7B-Instruct")).layers == 28
    three = resolve_shape(ModelConfig(name="unsloth/Qwen2.5-VL-3B-Instruct-bnb-4bit"))
    assert (three.hidden, three.tie_embeddings, three.vocab) == (2048, True, 151936)

    nested = seven_b_config("7b").to_dict()
    (tmp_path / "config.json").write_text(json.dumps(nested))
    from_dir = resolve_shape(ModelConfig(name=str(tmp_path)))
    assert from_dir == ModelShape(**{**QWEN25_VL_7B.__dict__, "name": str(tmp_path)})
    # The released config.json keeps the text sizes at the top level.
    flat = {**nested.pop("text_config"), **nested}
    assert shape_from_hf_config(flat, name="x") == from_dir.__class__(**{**from_dir.__dict__, "name": "x"})

    tiny = resolve_shape(ModelConfig(name="tiny"))
    assert (tiny.hidden, tiny.layers, tiny.vision_hidden) == (64, 2, 32)
    with pytest.raises(UserError, match="cannot plan memory for model 'no/such-model'"):
        resolve_shape(ModelConfig(name="no/such-model"))


def _peak(raw: dict, arm: str, phase: str, knobs: Knobs) -> float:
    recipe = recipe_from_dict(raw)
    work = workload_of(recipe, next(a for a in recipe.arms if a.name == arm))
    return phase_peak_gb(work, phase, knobs)


def test_estimates_grow_with_group_size_sequence_length_and_batch():
    knobs = Knobs(micro_batch_size=2, logprob_chunk=4096, rollout_batch_size=2)
    for phase in ("rollout", "logprob_pass", "grpo_step"):
        by_group = [_peak(paper_like(arms__1__rft__group_size=g), "rft", phase, knobs) for g in (2, 4, 8, 16)]
        assert by_group == sorted(by_group)
        assert by_group[0] < by_group[-1] or phase != "rollout"
    for phase, arm in (("sft_step", "sft"), ("grpo_step", "rft"), ("rollout", "rft"), ("evaluation", "sft")):
        by_length = [_peak(paper_like(tasks__0__max_prompt_tokens=n), arm, phase, knobs) for n in (512, 1024, 2048, 4096)]
        assert by_length == sorted(by_length) and by_length[0] < by_length[-1], phase
    for phase, arm in (("sft_step", "sft"), ("grpo_step", "rft"), ("logprob_pass", "rft")):
        by_batch = [_peak(PAPER_LIKE, arm, phase, Knobs(mb, 4096, 1)) for mb in (1, 2, 4, 8)]
        assert by_batch == sorted(by_batch) and by_batch[0] < by_batch[-1], phase
    by_rollout = [_peak(PAPER_LIKE, "rft", "rollout", Knobs(1, 4096, rb)) for rb in (1, 2, 4)]
    assert by_rollout[0] < by_rollout[1] < by_rollout[2]


def test_auto_knobs_stop_at_saturation_and_shrink_to_fit():
    # Short sequences (256-token prompts, 128-token answers): several fit in one saturating pass.
    short = paper_like()
    for task in short["tasks"]:
        task.update(max_prompt_tokens=256, max_answer_tokens=128)
    short["model"]["max_pixels"] = 50176
    recipe = recipe_from_dict(short)
    sizes = (80, 24, 13, 12.5)
    plans = {gb: plan(recipe, gb) for gb in sizes}
    micro = [plans[gb].knobs_for("sft").micro_batch_size for gb in sizes]
    assert micro[0] == SATURATING_TOKENS // (256 + 128), "no larger than what saturates the GPU"
    assert micro == sorted(micro, reverse=True) and micro[0] > micro[-1]
    for gb, result in plans.items():
        assert result.fits
        assert all(p.peak_gb <= 0.9 * gb for p in result.phases.values())
    rollouts = plan(recipe_from_dict(PAPER_LIKE), 80).knobs_for("rft").rollout_batch_size
    # G = 8 sequences per prompt, no more prompts than one update uses
    assert rollouts == min(PAPER_LIKE["arms"][1]["rft"]["prompts_per_step"], SATURATING_SEQUENCES // 8)


def test_nothing_fits_gives_advice():
    recipe = recipe_from_dict(PAPER_LIKE)
    small = plan(recipe, 11)
    assert not small.fits
    assert all(k.micro_batch_size == 1 for k in small.knobs.values())
    advice = " | ".join(small.advice)
    for knob in ("model.lora.r", "rft.group_size", "evaluation.generation.batch_size"):
        assert knob in advice
    tiny_gpu = plan(recipe, 4)
    assert any("frozen model alone" in line for line in tiny_gpu.advice)


def test_paper_like_recipe_meets_the_memory_budget():
    """SFT <= 12 GB and a GRPO step with its rollouts <= 16 GB; the whole protocol fits 16 GB."""
    at_24 = plan(recipe_from_dict(PAPER_LIKE), 24)
    sft = at_24.arms["sft"].phases
    rft = at_24.arms["rft"].phases
    # At the knobs the planner picks for a 24 GiB card, not only at the smallest ones.
    assert sft["sft_step"].peak_gb <= 12
    assert max(rft[p].peak_gb for p in ("logprob_pass", "grpo_step")) <= 16
    # Generation fills the room the card has left with sequences (16 GiB cards get fewer).
    assert 16 < rft["rollout"].peak_gb <= at_24.usable_gb
    assert at_24.knobs_for("rft").rollout_batch_size > plan(recipe_from_dict(PAPER_LIKE), 16).knobs_for("rft").rollout_batch_size
    # The fused log-prob is what keeps the steps small: materialised logits cost far more.
    assert sft["sft_step"].naive_peak_gb > sft["sft_step"].peak_gb + 3
    assert rft["grpo_step"].naive_peak_gb > rft["grpo_step"].peak_gb + 1

    at_16 = plan(recipe_from_dict(PAPER_LIKE), 16)
    assert at_16.fits
    assert all(p.peak_gb <= 16 * 0.9 for p in at_16.phases.values())


def test_fixed_knobs_and_rif_rollouts_are_respected():
    raw = paper_like(arms__0__micro_batch_size=2)
    raw["arms"].append({"name": "rif", "method": "rif_rft", "rif": {"rollouts": 16},
                        "rft": {"group_size": 8, "prompts_per_step": 4, "max_new_tokens": 512}})
    result = plan(recipe_from_dict(raw), 24)
    assert result.knobs_for("sft").micro_batch_size == 2
    knobs = Knobs(1, 4096, 1)
    assert _peak(raw, "rif", "rollout", knobs) > _peak(raw, "rft", "rollout", knobs)

    too_big = plan(recipe_from_dict(paper_like(arms__0__micro_batch_size=8)), 14)
    assert not too_big.arms["sft"].fits
    assert any("arms.sft.micro_batch_size: auto" in line for line in too_big.advice)


def test_plan_json_and_table():
    result = plan(recipe_from_dict(PAPER_LIKE), 24)
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) >= {"phases", "fits", "knobs", "gpu_gb", "model", "advice"}
    assert set(data["phases"]) == {"sft_step", "rollout", "logprob_pass", "grpo_step", "evaluation"}
    for phase in data["phases"].values():
        assert phase["peak_gb"] == pytest.approx(sum(phase["components"].values()), abs=0.02)
        assert phase["naive_peak_gb"] >= phase["peak_gb"] - 1e-6
    assert set(data["knobs"]["rft"]) == {"micro_batch_size", "logprob_chunk", "rollout_batch_size", "micro_batch_tokens",
                                        "packed_sequences"}
    console = Console(record=True, width=200)
    render_plan(result, console)
    text = console.export_text()
    for needle in ("sft_step", "grpo_step", "KV cache", "naive logits peak", "fits on a 24 GiB GPU"):
        assert needle in text
    single = plan(recipe_from_dict(PAPER_LIKE), 24, arm="rft")
    assert list(single.arms) == ["rft"] and "sft_step" not in single.phases
    with pytest.raises(UserError, match="no arm 'nope'"):
        plan(recipe_from_dict(PAPER_LIKE), 24, arm="nope")


def test_plan_recipe_file_prints_json_and_returns_exit_code(tmp_path, capsys):
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(PAPER_LIKE))
    assert plan_recipe_file(path, [], 24, True) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] and data["gpu_gb"] == 24
    assert plan_recipe_file(path, ["arms.rft.rft.group_size=64", "arms.rft.micro_batch_size=64"], 16, True) == 1
    data = json.loads(capsys.readouterr().out)
    assert not data["arms"]["rft"]["fits"] and data["arms"]["rft"]["advice"]
    assert plan_recipe_file(path, [], 24, False) == 0
    assert "fits on a 24 GiB GPU" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ bench step


TEST_SHAPE = ModelShape(
    name="test", layers=2, hidden=64, intermediate=128, heads=4, kv_heads=2, head_dim=16, vocab=512,
    tie_embeddings=False, vision_layers=2, vision_hidden=32, vision_intermediate=64, vision_heads=2,
    vision_out_hidden=64,
)


def test_bench_step_needs_cuda(monkeypatch):
    from lite_cpt.bench.step import bench_step

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="bench step needs a CUDA GPU"):
        bench_step()


def test_bench_plan_uses_the_seven_b_shapes():
    from lite_cpt.bench.step import bench_recipe, planned

    estimate = planned(bench_recipe("7b"))
    assert set(estimate) == {"sft_step", "rollout", "logprob_pass", "grpo_step", "evaluation"}
    assert 8 < estimate["sft_step"]["allocated_gb"] < 12
    assert estimate["sft_step"]["naive_allocated_gb"] > estimate["sft_step"]["allocated_gb"]


@pytest.fixture
def one_thread():
    """Tiny matmuls on a busy 2-core machine run ~1000x slower with two competing threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bench_step_drives_the_functions_a_run_calls(one_thread, monkeypatch):
    """Every measured phase is the run's own function (spied on), on prompts of the asked
    length and rollouts of the full answer length, with every rollout trained."""
    import lite_cpt.run.evaluate
    import lite_cpt.train.policy_update
    import lite_cpt.train.rft
    import lite_cpt.train.sft
    from lite_cpt.bench.step import OTHER_LAYOUT, bench_setup, bench_shapes, cpu_measure, run_bench_phases

    calls: dict[str, list] = {}

    def spy(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            calls.setdefault(name, []).append(result)
            return result

        monkeypatch.setattr(module, name, wrapper)

    for module, name in ((lite_cpt.train.sft, "train_sft"), (lite_cpt.train.rft, "generate_rollouts"),
                         (lite_cpt.train.policy_update, "prepare_mini_batches"),
                         (lite_cpt.train.policy_update, "policy_update"),
                         (lite_cpt.run.evaluate, "evaluate_sets")):
        spy(module, name)
    setup = bench_setup("tiny", bench_shapes("tiny", eval_batch=3))
    results = run_bench_phases(setup, cpu_measure)
    # the GRPO update runs again in the other layout (shared prefix vs expanded rows), same rollouts
    assert set(results) == {"sft_step", "rollout", "logprob_pass", "grpo_step", OTHER_LAYOUT, "evaluation"}
    assert {name: len(made) for name, made in calls.items()} == {
        "train_sft": 2, "generate_rollouts": 2, "prepare_mini_batches": 3, "policy_update": 2, "evaluate_sets": 1}
    layouts = results[OTHER_LAYOUT]["layout_tokens"]
    assert layouts["shared prefix"]["tokens"] < layouts["expanded"]["tokens"]
    rollouts = calls["generate_rollouts"][-1]
    assert rollouts.rewards.numel() == 4 and len(set(rollouts.rewards.tolist())) > 1  # the group has variance
    assert results["rollout"]["tokens"] == rollouts.generated_tokens > 0
    assert calls["policy_update"][0]["updated"] and results["grpo_step"]["tokens"] == sum(
        len(ids) for ids in rollouts.token_ids)
    assert results["evaluation"]["prompts"] == 3
    from lite_cpt.train.batching import encode_prompts

    lengths = [int(encode_prompts(setup.processor, [e.prompt(cot=True)])["attention_mask"].sum())
               for e in setup.examples]
    assert all(90 <= n <= 96 for n in lengths), lengths  # about the asked length, never over it


def test_bench_model_quantises_language_linears_to_nf4(one_thread):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    from lite_cpt.train.batching import encode_sft, to_device
    from lite_cpt.bench.step import bench_config, bench_processor, build_random_model
    from lite_cpt.train.logprob import token_logprobs

    processor = bench_processor(4)
    config = bench_config(dataclasses.replace(TEST_SHAPE, vocab=1024), processor)
    plain = build_random_model(config, device="cpu", quantize=False, lora_r=4, gradient_checkpointing=False)
    nf4 = build_random_model(config, device="cpu", quantize=True, lora_r=4, gradient_checkpointing=False)
    modules = dict(nf4.named_modules())
    base = modules["base_model.model.model.language_model.layers.1.mlp.down_proj"].base_layer
    assert isinstance(base, bnb.nn.Linear4bit) and base.weight.quant_type == "nf4"
    assert not isinstance(modules["base_model.model.model.visual.blocks.0.mlp.down_proj"], bnb.nn.Linear4bit)
    from PIL import Image

    from lite_cpt.train.batching import Prompt

    batch, labels = encode_sft(processor, [Prompt("what is it", (Image.new("RGB", (56, 56), "red"),), "x")],
                               ["a red square"], max_prompt_tokens=256, max_answer_tokens=16)
    with torch.no_grad():
        reference = token_logprobs(plain, to_device(batch, "cpu", torch.bfloat16), labels)
        quantised = token_logprobs(nf4, to_device(batch, "cpu", torch.bfloat16), labels)
    # Same seed, same weights up to NF4 rounding: the log-probs agree closely, not exactly.
    assert not torch.equal(reference.logp, quantised.logp)
    torch.testing.assert_close(quantised.logp, reference.logp, atol=0.2, rtol=0)


def test_evaluation_batch_is_the_most_that_fits_unless_the_recipe_pins_it():
    from lite_cpt.planner import choose_eval_batch, resolve_eval_batch

    auto = recipe_from_dict(paper_like(evaluation__generation__batch_size="auto"))
    work = workload_of(auto, auto.arms[0])
    assert work.eval_batch_auto and work.eval_batch == SATURATING_SEQUENCES
    floor = Knobs(1, None, 1)
    for gb in (16, 24, 80):
        usable = gb * 0.9
        per_arm = {arm.name: choose_eval_batch(workload_of(auto, arm), usable) for arm in auto.arms}
        n = min(chosen.eval_batch for chosen in per_arm.values())
        assert 1 <= n <= SATURATING_SEQUENCES
        planned = plan(auto, gb)
        # one batch for the whole recipe: every arm's plan evaluates at the run's batch
        assert resolve_eval_batch(auto, gb) == n
        assert {arm_plan.workload.eval_batch for arm_plan in planned.arms.values()} == {n}
        for name, chosen in per_arm.items():
            fixed = dataclasses.replace(chosen, eval_batch=n)
            assert phase_peak_gb(fixed, "evaluation", floor) <= usable  # every arm's evaluation fits
        if n < SATURATING_SEQUENCES:  # the largest that fits the tightest arm: one more does not
            tightest = min(per_arm.values(), key=lambda chosen: chosen.eval_batch)
            assert phase_peak_gb(dataclasses.replace(tightest, eval_batch=n + 1), "evaluation", floor) > usable
    # 512-token answers: the KV room of a 16 GB card holds fewer sequences than that of an 80 GB one
    assert resolve_eval_batch(auto, 16) < resolve_eval_batch(auto, 24) <= resolve_eval_batch(auto, 80) == SATURATING_SEQUENCES
    if not torch.cuda.is_available():  # on CPU memory is not the limit
        assert resolve_eval_batch(auto) == SATURATING_SEQUENCES
    pinned = recipe_from_dict(paper_like(evaluation__generation__batch_size=16))
    assert [resolve_eval_batch(pinned, gb) for gb in (16, 80)] == [16, 16]
    assert plan(pinned, 80).arms["rft"].workload.eval_batch == 16
    with pytest.raises(Exception, match="batch_size"):
        recipe_from_dict(paper_like(evaluation__generation__batch_size=0))


def test_evaluation_runs_at_the_planned_batch():
    from lite_cpt.run.unit_plan import planned_generation

    auto = recipe_from_dict(paper_like(evaluation__generation__batch_size="auto"))
    pinned = recipe_from_dict(paper_like(evaluation__generation__batch_size=12))
    assert planned_generation(pinned).batch_size == 12
    assert planned_generation(auto).max_new_tokens == 512
    if not torch.cuda.is_available():
        assert planned_generation(auto).batch_size == SATURATING_SEQUENCES
    assert auto.evaluation.generation.batch_size == "auto"  # the recipe itself is left as it was
