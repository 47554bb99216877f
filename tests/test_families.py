"""Model families: each adapter against the real transformers model of its family — log-probs
from the last hidden state, LoRA placement, image tokens, planner shapes of the released configs —
and the tiny recipe end to end on the Qwen3-VL and text-only tiny models."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

from lite_cpt.train.batching import Prompt, chat_text, encode_prompts, encode_sft
from lite_cpt.run.continual import run_recipe
from lite_cpt.data.synthetic import generate
from lite_cpt.errors import UserError
from lite_cpt.families import FAMILIES, family_of_model, resolve_family
from lite_cpt.families.qwen3_vl import QWEN3_VL_8B, QWEN3_VL_8B_CONFIG
from lite_cpt.families.text import QWEN25_7B
from lite_cpt.train.logprob import token_logprobs
from lite_cpt.models import add_lora, load_processor
from lite_cpt.planner import parameter_counts, plan, resolve_shape, total_parameters
from lite_cpt.planner.shapes import linear_module_names, lora_layout, shape_from_hf_config
from lite_cpt.recipe import load_recipe, recipe_from_dict
from lite_cpt.recipe_model import LoraConfig, ModelConfig, TinyModelConfig
from lite_cpt.train.rollout import Sampling, generate_completions
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus
from tests.helpers import tiny_recipe

FAMILY_NAMES = ["qwen2_5_vl", "qwen3_vl", "text"]
#: Synthetic tasks each family can read (a text-only model gets no images).
TASKS = {"qwen2_5_vl": "mini_clevr", "qwen3_vl": "mini_clevr", "text": "mini_arithmetic"}


@pytest.fixture(scope="module", params=FAMILY_NAMES)
def tiny(request):
    name = request.param
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0, name), name)
    return name, model, processor


def _prompts(family: str, count: int = 3):
    samples = generate(TASKS[family], "test", count)
    return [Prompt(s.question, s.images) for s in samples], [s.answer for s in samples]


def test_each_family_builds_its_own_architecture(tiny):
    name, model, processor = tiny
    expected = {"qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration", "qwen3_vl": "Qwen3VLForConditionalGeneration",
                "text": "Qwen2ForCausalLM"}
    assert type(model).__name__ == expected[name]
    assert family_of_model(model).name == name
    assert FAMILIES[name].vision == hasattr(processor, "image_processor")


def test_shared_prefill_samples_what_a_prefill_per_sample_does(tiny):
    """The rollout's one prefill per prompt (its cache shared by the G samples) on each family's
    own position scheme: multimodal rotary positions, or the text model's 1-D ones."""
    name, model, processor = tiny
    prompts, _ = _prompts(name, 4)
    sampling = Sampling(group_size=3, max_new_tokens=6, temperature=1.0, top_p=0.95)
    kwargs = dict(prompts_per_call=len(prompts), generator_seed=5)
    shared = generate_completions(model, processor, prompts, sampling, **kwargs)
    expanded = generate_completions(model, processor, prompts, sampling, expand_before_prefill=True, **kwargs)
    assert shared.token_ids == expanded.token_ids
    assert len(shared.token_ids) == 3 * len(prompts)


def test_fused_logprob_from_the_last_hidden_state_equals_the_models_own_log_softmax(tiny):
    name, model, processor = tiny
    peft = add_lora(model, LoraConfig(r=4, alpha=8))
    with torch.no_grad():  # non-zero adapters, so the LoRA path is part of what is compared
        for param_name, param in peft.named_parameters():
            if "lora_B" in param_name:
                param.normal_(0, 0.05)
    prompts, answers = _prompts(name)
    batch, labels = encode_sft(processor, prompts, answers, max_prompt_tokens=256, max_answer_tokens=8)
    fused = token_logprobs(peft, batch, labels)
    with torch.no_grad():
        log_probs = peft(**batch).logits.float().log_softmax(-1)
    targets = labels[:, 1:]
    expected = log_probs[:, :-1].gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * fused.mask
    assert fused.mask.sum() >= len(answers)
    torch.testing.assert_close(fused.logp, expected, atol=1e-5, rtol=1e-5)
    peft.unload()


def test_lora_targets_only_the_language_models_decoder_linears(tiny):
    name, model, processor = tiny
    family = FAMILIES[name]
    peft = add_lora(model, LoraConfig(r=4, alpha=8))
    adapted = [n.removeprefix("base_model.model.").removesuffix(".lora_A")
               for n, _ in peft.named_modules() if n.endswith(".lora_A")]
    assert len(adapted) == model.config.get_text_config().num_hidden_layers * 7
    assert all(n.startswith(family.lm_layers + ".") for n in adapted)
    assert not any("visual" in n or "lm_head" in n for n in adapted)
    # The planner's names of those linears are the model's own.
    shape = family.tiny_shape(TinyModelConfig())
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "lora" not in n}
    linears = {n.removesuffix(".base_layer").removeprefix("base_model.model.") for n in linears}
    assert set(linear_module_names(shape)) == linears
    assert sorted(adapted) == sorted(n for n in linear_module_names(shape)
                                     if lora_layout(shape, 4, "auto").lm_modules and n.startswith(family.lm_layers))
    peft.unload()


def test_image_tokens_follow_the_familys_patch_and_merge(tiny):
    name, model, processor = tiny
    prompts, _ = _prompts(name, 2)
    batch = encode_prompts(processor, prompts)
    if not FAMILIES[name].vision:
        assert set(batch) == {"input_ids", "attention_mask"}
        images = generate("mini_clevr", "test", 1)[0].images
        with pytest.raises(UserError, match="has no vision tower but a prompt carries an image"):
            encode_prompts(processor, [Prompt("How many?", images)])
        return
    # 56 px: Qwen2.5-VL keeps 56 (4x4 patches of 14), Qwen3-VL rounds up to 64 (4x4 patches of 16);
    # either way 2x2 merged image tokens per image, one per quadrant of the synthetic images.
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]
    assert (batch["input_ids"] == model.config.image_token_id).sum().item() == 2 * 4
    other = [Prompt(p.text, s.images) for p, s in zip(prompts, generate("mini_clevr", "train", 2))]
    with torch.no_grad():  # the vision tower really runs
        assert not torch.allclose(model(**batch).logits, model(**encode_prompts(processor, other)).logits)


def test_tiny_models_reload_with_the_familys_auto_class(tiny, tmp_path):
    from lite_cpt.models import load_pretrained
    from lite_cpt.tiny.model import save_tiny_model

    name, model, processor = tiny
    path = save_tiny_model(model, processor, tmp_path / name)
    loaded, loaded_processor = load_pretrained(str(path), ModelConfig(name=str(path), quantization="none"))
    auto = AutoModelForImageTextToText if FAMILIES[name].vision else AutoModelForCausalLM
    assert isinstance(loaded, auto._model_mapping[type(model.config)])
    prompts, _ = _prompts(name, 2)
    a, b = encode_prompts(processor, prompts), encode_prompts(loaded_processor, prompts)
    assert torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**a).logits, loaded(**b).logits)


def test_family_is_inferred_from_config_or_id_and_errors_list_the_allowed(tmp_path):
    assert resolve_family(ModelConfig(name="Qwen/Qwen2.5-VL-7B-Instruct")).name == "qwen2_5_vl"
    assert resolve_family(ModelConfig(name="Qwen/Qwen3-VL-8B-Instruct")).name == "qwen3_vl"
    assert resolve_family(ModelConfig(name="Qwen/Qwen2.5-7B-Instruct")).name == "text"
    assert resolve_family(ModelConfig(name="tiny")).name == "qwen2_5_vl"
    assert resolve_family(ModelConfig(name="tiny", family="text")).name == "text"
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_VL_8B_CONFIG))
    assert resolve_family(ModelConfig(name=str(tmp_path))).name == "qwen3_vl"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_onevision"}))
    with pytest.raises(UserError, match="model_type 'llava_onevision'.*qwen2_5_vl, qwen3_vl, text"):
        resolve_family(ModelConfig(name=str(tmp_path)))
    with pytest.raises(UserError, match="model.family: unknown model family 'gemma3'; allowed: auto, qwen2_5_vl"):
        recipe_from_dict({"model": {"family": "gemma3"}})
    with pytest.raises(UserError, match="cannot tell the model family of 'someone/model'.*set model.family"):
        resolve_family(ModelConfig(name="someone/model"))


def test_planner_shapes_of_the_released_configs_match_the_real_architectures():
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    def meta_count(model_class, config):
        with torch.device("meta"):
            return sum(p.numel() for p in model_class(config).parameters())

    # Qwen3-VL-8B: "8.77 B parameters" (its model card); the analytic count equals transformers'.
    assert shape_from_hf_config(QWEN3_VL_8B_CONFIG, name=QWEN3_VL_8B.name) == QWEN3_VL_8B
    assert (QWEN3_VL_8B.layers, QWEN3_VL_8B.hidden, QWEN3_VL_8B.pixels_per_image_token) == (36, 4096, 1024)
    config = Qwen3VLConfig(**{k: v for k, v in QWEN3_VL_8B_CONFIG.items() if k != "model_type"})
    assert meta_count(Qwen3VLForConditionalGeneration, config) == total_parameters(QWEN3_VL_8B) == 8_767_123_696
    assert parameter_counts(QWEN3_VL_8B)["lm_biases"] == 0
    # Qwen2.5-7B-Instruct: 7.61 B parameters, no vision tower.
    text = Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)
    assert meta_count(Qwen2ForCausalLM, text) == total_parameters(QWEN25_7B) == 7_615_616_512
    assert shape_from_hf_config({**text.to_dict(), "model_type": "qwen2"}, name=QWEN25_7B.name) == QWEN25_7B
    assert parameter_counts(QWEN25_7B)["vision"] == 0
    assert resolve_shape(ModelConfig(name="Qwen/Qwen3-VL-8B-Instruct")) == QWEN3_VL_8B
    assert resolve_shape(ModelConfig(name="Qwen/Qwen2.5-7B-Instruct")) == QWEN25_7B
    # LoRA r=64 on the 36 language layers only: r * sum(in + out) per layer.
    per_layer = 64 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 2 * (4096 + 12288) + (12288 + 4096))
    assert lora_layout(QWEN3_VL_8B, 64, "auto").parameters == 36 * per_layer


def test_plan_of_the_family_recipes_gives_per_phase_peaks_within_a_24gb_card():
    from lite_cpt.planner.workload import image_tokens_of

    recipe = load_recipe("recipes/ablations/qwen3_vl.yaml", check_data=False)
    # 5,477,376 pixels / 1024 per Qwen3-VL image token = 5,349 tokens, over the 2,048-token prompt
    # budget, whose longer prompts are dropped: the plan bounds the image by the budget
    assert image_tokens_of(recipe)[0] == 2048
    qwen3 = plan(recipe, 24)
    qwen25 = plan(load_recipe("recipes/seven_tasks.yaml", check_data=False), 24)
    assert qwen3.model == "Qwen/Qwen3-VL-8B-Instruct"
    assert sum(qwen3.weights_gb.values()) > sum(qwen25.weights_gb.values())  # 8.8 B vs 8.3 B parameters
    for arm, arm_plan in qwen3.arms.items():
        assert arm_plan.fits, (arm, arm_plan.advice)
        for phase, phase_plan in arm_plan.phases.items():
            # At least the frozen base's weights; within the card.
            assert sum(qwen3.weights_gb.values()) < phase_plan.peak_gb < 24, (arm, phase, phase_plan.peak_gb)
    # The text-only protocol: Qwen2.5-7B-Instruct, no image tokens, the 7B's LM without its vision tower.
    text_recipe = load_recipe("recipes/ablations/text_only.yaml", check_data=False)
    assert resolve_family(text_recipe.model).name == "text" and image_tokens_of(text_recipe)[0] == 0
    text = plan(text_recipe, 24)
    assert text.parameters["vision"] == 0 and text.parameters["total"] == 7_615_616_512
    for arm, arm_plan in text.arms.items():
        assert arm_plan.fits and all(p.peak_gb < 24 for p in arm_plan.phases.values()), arm


RUN_ARMS = [{"name": "sft", "lr": 5e-3, "batch_size": 8},
            {"name": "rft", "lr": 1e-3, "max_steps_per_task": 1,
             "rft": {"group_size": 2, "prompts_per_step": 4, "max_new_tokens": 3, "cot": False}}]
RUNS = {
    "qwen3_vl": dict(tasks=("mini_clevr", "mini_pathvqa"), general="mini_pope", model_type="qwen3_vl"),
    "text": dict(tasks=("mini_arithmetic", "mini_textchoice"), general="mini_mmlu", model_type="qwen2"),
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(RUNS))
def test_tiny_recipe_runs_end_to_end_on_the_familys_tiny_model(family, tmp_path):
    from lite_cpt.tiny.base import ensure_tiny_base

    spec = RUNS[family]
    raw = tiny_recipe(tmp_path, arms=RUN_ARMS, tasks=spec["tasks"], name=family)
    raw["model"]["family"] = family
    raw["evaluation"]["general"] = [{"name": "general", "type": spec["general"], "size": 8}]
    recipe = recipe_from_dict(raw)
    run_dir = run_recipe(recipe)
    base = json.loads((ensure_tiny_base(recipe) / "config.json").read_text())
    assert base["model_type"] == spec["model_type"]
    # The cached base the run loaded prompts in its released model's chat format.
    processor = load_processor(FAMILIES[family], str(ensure_tiny_base(recipe)), recipe.model)
    images = () if family == "text" else ("an image",)
    assert chat_text(processor, Prompt("How many cubes?", images)) == RELEASED_PROMPTS[family]
    for arm in ("sft", "rft"):
        arm_dir = run_dir / arm if (run_dir / arm).is_dir() else run_dir / "seed_0" / arm
        matrix = json.loads((arm_dir / "matrix.json").read_text())
        assert matrix["tasks"] == [k.removeprefix("mini_") for k in spec["tasks"]]
        assert len(matrix["R"]) == 3 and all(0.0 <= x <= 1.0 for row in matrix["R"] for x in row)
        adapter = json.loads((arm_dir / "task_2" / "adapter_config.json").read_text())
        assert adapter["target_modules"] == FAMILIES[family].lora_targets
    assert (run_dir / "report.md").exists()


#: The prompt each released model's own chat template gives a question with one image (none for
#: the text model): Qwen2.5-VL-Instruct and Qwen2.5-Instruct open with their default system
#: prompts, Qwen3-VL-Instruct has none.
RELEASED_PROMPTS = {
    "qwen2_5_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                  "<|vision_start|><|image_pad|><|vision_end|>How many cubes?<|im_end|>\n<|im_start|>assistant\n",
    "qwen3_vl": "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many cubes?<|im_end|>\n"
                "<|im_start|>assistant\n",
    "text": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHow many cubes?<|im_end|>\n<|im_start|>assistant\n",
}


def test_tiny_models_prompt_in_their_released_models_chat_format(tiny):
    name, _, processor = tiny
    images = () if name == "text" else ("an image",)
    assert chat_text(processor, Prompt("How many cubes?", images)) == RELEASED_PROMPTS[name]
    # A system turn given by the caller replaces the default and carries no images.
    system = [{"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
              {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    if name == "text":
        system = [{"role": m["role"], "content": m["content"][0]["text"]} for m in system]
    assert processor.apply_chat_template(system, add_generation_prompt=False, tokenize=False) == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
