"""Over-long prompts: the length counted from image sizes alone is the processor's own encoding
length, for each vision family, and a task that drops over-long prompts drops exactly the rows
whose encoding is over its budget (EasyR1's filter_overlong_prompts)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from lite_cpt.data.images import FileImage
from lite_cpt.models import load_processor
from lite_cpt.families import get_family
from lite_cpt.recipe_model import ModelConfig, TinyModelConfig
from lite_cpt.recipe_tasks import task_config
from lite_cpt.tasks.base import build_task
from lite_cpt.tiny.model import build_tiny_model, save_tiny_model, tiny_corpus
from lite_cpt.train.batching import Prompt, encode_prompts
from lite_cpt.train.overlong import drop_overlong, image_size, prompt_token_count

#: (width, height): square, wide, tall, tiny (upscaled to min_pixels), large (downscaled to max_pixels)
SIZES = [(56, 56), (300, 120), (90, 700), (10, 12), (1600, 1200)]


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def processor(request, tmp_path_factory):
    """The family's tiny processor as `load_processor` loads a checkpoint's, with an image budget
    that lets sizes differ (the tiny model's own resizes every image to one size)."""
    name = request.param
    model, tiny_processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0, name), name)
    path = save_tiny_model(model, tiny_processor, tmp_path_factory.mktemp(name) / "tiny")
    return load_processor(get_family(name), str(path), ModelConfig(min_pixels=3136, max_pixels=200_704))


def _image(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (width % 255, height % 255, 7))


@pytest.mark.parametrize("size", SIZES)
def test_the_counted_length_is_the_processors_encoding_length(processor, size):
    prompt = Prompt("How many cubes are left of the red sphere?", (_image(*size),), "s")
    assert prompt_token_count(processor, prompt) == encode_prompts(processor, [prompt])["input_ids"].shape[1]


def test_two_images_and_no_image_are_counted_too(processor):
    two = Prompt("Compare the two pictures.", (_image(300, 120), _image(90, 700)), "s")
    none = Prompt("What is two plus two?", (), "s")
    for prompt in (two, none):
        assert prompt_token_count(processor, prompt) == encode_prompts(processor, [prompt])["input_ids"].shape[1]


def test_an_image_file_is_measured_from_its_header(tmp_path):
    buffer = io.BytesIO()
    _image(321, 123).save(buffer, format="PNG")
    (tmp_path / "a.png").write_bytes(buffer.getvalue())
    assert image_size(FileImage("a.png", (tmp_path,))) == (123, 321)


def _task(budget: int, overlong: str):
    config = task_config(name="clevr", type="mini_clevr", max_prompt_tokens=budget, overlong_prompts=overlong)
    return build_task(config)


def test_drop_leaves_out_exactly_the_rows_over_budget(processor):
    task = _task(8, "drop")
    samples = task.load("test", 6)
    for sample, size in zip(samples, [(56, 56), (1600, 1200), (300, 120), (90, 700), (1600, 1200), (10, 12)]):
        sample.images = (_image(*size),)
    lengths = {s.id: max(encode_prompts(processor, [p])["input_ids"].shape[1]
                         for p in (s_prompt(task, s, cot) for cot in (False, True))) for s in samples}
    budget = sorted(lengths.values())[2]  # some rows fit, some do not
    task.config = task.config.model_copy(update={"max_prompt_tokens": budget})
    kept, dropped = drop_overlong(task, samples, processor)
    assert dropped == [s.id for s in samples if lengths[s.id] > budget] and dropped
    assert [s.id for s in kept] == [s.id for s in samples if lengths[s.id] <= budget]


def test_cut_keeps_every_row(processor):
    task = _task(8, "cut")
    samples = task.load("test", 3)
    kept, dropped = drop_overlong(task, samples, processor)
    assert kept == samples and dropped == []


def s_prompt(task, sample, cot: bool) -> Prompt:
    return Prompt(task.prompt(sample, cot), sample.images, sample.id)


def test_the_run_drops_them_when_it_loads_a_split_and_says_so(processor, caplog):
    from lite_cpt.run.splits import load_samples

    task = _task(8, "drop")
    every = task.load("test", 4)
    longest = max(prompt_token_count(processor, s_prompt(task, s, True)) for s in every)
    task.config = task.config.model_copy(update={"max_prompt_tokens": longest - 1})
    with caplog.at_level("WARNING"):
        kept = load_samples(task, "test", 4, processor)
    assert len(kept) < 4
    assert "whose prompt is over max_prompt_tokens" in caplog.text and "overlong_prompts: drop" in caplog.text


def test_lite_cpt_eval_reads_the_same_rows_as_the_run(processor):
    """`lite-cpt eval`'s sets (recipe_eval_sets) go through the run's split reader: with the
    processor, a task that drops over-long prompts leaves out the same rows."""
    from lite_cpt.recipe import load_recipe
    from lite_cpt.run.evaluate import recipe_eval_sets
    from lite_cpt.run.splits import load_samples
    from lite_cpt.train.overlong import longest_prompt_tokens

    def tasks_sets(budget: int):
        recipe = load_recipe("recipes/tiny.yaml", ["tasks.*.overlong_prompts=drop", f"tasks.*.max_prompt_tokens={budget}",
                                                   "tasks.*.test_size=6"], check_data=False)
        return recipe_eval_sets(recipe, processor=processor)[:len(recipe.tasks)]

    every = tasks_sets(100_000)  # nothing over budget
    lengths = sorted(longest_prompt_tokens(s.task, sample, processor) for s in every for sample in s.samples)
    budget = lengths[len(lengths) // 2]  # about half the rows fit
    sets = tasks_sets(budget)
    for evalset in sets:
        task = evalset.task
        run_rows = load_samples(task, task.config.source.test_split, task.config.test_size, processor)
        assert [s.id for s in evalset.samples] == [s.id for s in run_rows]
    kept = sum(len(s.samples) for s in sets)
    assert 0 < kept < len(lengths) and kept == sum(n <= budget for n in lengths)
