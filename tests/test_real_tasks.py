"""Real-dataset task types on fixtures in each dataset's published schema: loading, field
mapping, images from files and bytes, prompts, and rewards against hand-computed values."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lite_cpt.data import loaders
from lite_cpt.data.fixtures import dataset_spec, write_fixtures
from lite_cpt.data.images import FileImage, TableImage, decode_image
from lite_cpt.data.location import hf_datasets_cache, hf_hub_cache, resolve_location
from lite_cpt.errors import UserError
from lite_cpt.recipe_tasks import BenchmarkConfig, TaskConfig
from lite_cpt.tasks import BENCHMARK_TYPES, build_task
from lite_cpt.tasks.base import Sample
from lite_cpt.tasks.choice import parse_options
from lite_cpt.tasks.mathqa import math_equivalent
from lite_cpt.tasks.vqa import normalize_vqa_answer, pope_f1, vqa_accuracy

N = 8


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("data"), n=N, seed=0)


@pytest.fixture(autouse=True)
def _private_hf_home(private_hf_home):
    """Every test here reads datasets through its own empty Hugging Face cache."""


def make(type_name: str, root: Path | None, seed: int = 0, multiple_choice: bool = False, **source):
    """The task (or benchmark) of a type, its source the type's own dataset with `source` overrides."""
    if type_name in BENCHMARK_TYPES:
        config = BenchmarkConfig(name=type_name, type=type_name, source=source)
        return build_task(config, root, seed, benchmark=True)
    config = TaskConfig(name=type_name, type=type_name, source=source, multiple_choice=multiple_choice)
    return build_task(config, root, seed)


def pictures(sample: Sample) -> list[Image.Image]:
    return [decode_image(ref, sample.id) for ref in sample.images]


# (type, rows in its test split after filtering, a phrase of one prompt)
EXPECTED = {
    "scienceqa": (N, "Options:"),
    "textvqa": (N, "single word or phrase"),
    "vizwiz": (N, "Unanswerable"),
    "gqa": (N, "single word or phrase"),
    "geometry3k": (N, "number or a simplified expression"),
    "pathvqa": (N, "single word or phrase"),
    "clevr": (2 * N - (2 * N * 80) // 100, "Answer with a number."),
    "mmmu": (N, "[image 1]"),
    "mmlu_pro": (N, "(J)"),
    "pope": (N, "Answer yes or no."),
}


@pytest.mark.parametrize("type_name", list(EXPECTED))
def test_each_type_loads_its_fixture_and_scores_its_own_answer(fixture_root, type_name):
    task = make(type_name, fixture_root)
    split = dataset_spec(type_name).test_split
    samples = task.load(split, None)
    count, phrase = EXPECTED[type_name]
    assert len(samples) == task.count(split) == count
    assert len({s.id for s in samples}) == count
    assert any(phrase in task.prompt(s) for s in samples)
    for sample in samples:
        assert sample.question and sample.answer
        if type_name == "mmlu_pro":
            assert sample.images == ()  # text only
        else:
            assert sample.images and not any(isinstance(ref, Image.Image) for ref in sample.images)  # lazy
            assert all(p.mode == "RGB" for p in pictures(sample))
        assert task.score(sample.answer, sample) == 1.0
        assert task.score("<answer>" + sample.answer + "</answer>", sample, cot=True) == 1.0
        if type_name == "mmmu" and sample.choices:  # MMMU's rule: an unparseable answer is a seeded draw
            assert task.score("qwertyuiop", sample) == task.score("asdfghjkl", sample)
            continue
        assert task.score("qwertyuiop", sample) == (
            1.0 if type_name == "pope" and sample.answer == "yes" else 0.0
        )


def test_scienceqa_maps_index_to_letter_and_skips_text_only_rows(fixture_root):
    task = make("scienceqa", fixture_root)
    table = loaders.open_split(task.location(), "train")
    assert len(table.dataset) > N  # the fixture has text-only rows too
    every = table.dataset.to_list()
    assert any(r["image"] is None for r in every)
    raw = [r for r in every if r["image"] is not None]
    samples = sorted(task.load("train", None), key=lambda s: s.meta["row"])
    assert [s.answer for s in samples] == ["ABCDE"[r["answer"]] for r in raw]
    assert [s.choices for s in samples] == [r["choices"] for r in raw]
    first, row = samples[0], raw[0]
    prompt = task.prompt(first)
    assert row["question"] in prompt and "(A) " + row["choices"][0] in prompt
    assert prompt.endswith("Answer with the option's letter from the given choices.")
    assert first.meta["rationale"] == row["solution"]
    assert task.reward(f"({first.answer})", first) == 1.0
    assert task.reward(row["choices"][int(row["answer"])], first) == 1.0  # the option's text


def test_cot_prompt_keeps_the_answer_form_and_asks_for_tags(fixture_root):
    task = make("scienceqa", fixture_root)
    prompt = task.prompt(task.load("test", 1)[0], cot=True)
    assert "option's letter" in prompt and "<think>" in prompt and "<answer>" in prompt


def test_images_come_from_files_and_from_embedded_bytes(fixture_root):
    vizwiz = make("vizwiz", fixture_root).load("val", None)
    first = vizwiz[0]
    assert isinstance(first.images[0], FileImage)
    on_disk = Image.open(fixture_root / "vizwiz" / "val" / first.id).convert("RGB")
    assert np.array_equal(np.asarray(pictures(first)[0]), np.asarray(on_disk))

    gqa = make("gqa", fixture_root).load("testdev", 2)
    assert (
        pictures(gqa[0])[0].size
        == Image.open(fixture_root / "gqa" / "images" / f"{gqa[0].meta['image_id']}.jpg").size
    )

    pathvqa = make("pathvqa", fixture_root)
    table = loaders.open_split(pathvqa.location(), "test")
    raw = table.dataset.with_format("arrow")[[0]].to_pylist()[0]["image"]
    assert isinstance(raw["bytes"], bytes)  # stored inline, as the hub's parquet does
    sample = next(s for s in pathvqa.load("test", None) if s.meta["row"] == 0)
    assert isinstance(sample.images[0], TableImage)  # a reference into the table, not the bytes
    assert np.array_equal(
        np.asarray(pictures(sample)[0]),
        np.asarray(Image.open(__import__("io").BytesIO(raw["bytes"])).convert("RGB")),
    )


def test_subsampling_is_seeded_and_a_smaller_size_is_a_prefix(fixture_root):
    ids = lambda task, size: [s.id for s in task.load("train", size)]
    task = make("textvqa", fixture_root, seed=3)
    assert ids(task, 3) == ids(task, 3) == ids(task, 5)[:3]
    assert len(set(ids(task, 5))) == 5
    others = [ids(make("textvqa", fixture_root, seed=s), 5) for s in range(4)]
    assert len({tuple(o) for o in others}) > 1
    assert sorted(ids(task, None)) == sorted(ids(task, 100))


def test_split_slices_are_disjoint_and_cover_the_split(fixture_root):
    task = make("clevr", fixture_root)
    train, test = task.load("train[:80%]", None), task.load("train[80%:]", None)
    assert len(train) == (2 * N * 80) // 100 and len(train) + len(test) == 2 * N
    assert not {s.id for s in train} & {s.id for s in test}
    assert [s.id for s in task.load("train[-3:]", None)] == [f"clevr/train/{i}" for i in (13, 14, 15)]


# ---------------------------------------------------------------------------------------------
# Metrics


def test_vqa_accuracy_is_the_official_leave_one_out_average():
    answers = ["nikon"] * 2 + ["canon"] * 8
    # 2 humans said "nikon": removing one of them leaves 1 match (1/3), removing any of the
    # other 8 leaves 2 matches (2/3): (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    assert vqa_accuracy("Nikon", answers) == pytest.approx(0.6)
    assert vqa_accuracy("canon", answers) == 1.0
    assert vqa_accuracy("nikon", ["nikon"] + ["canon"] * 9) == pytest.approx(0.3)
    assert vqa_accuracy("sony", answers) == 0.0
    assert vqa_accuracy("yes", ["yes"]) == 1.0  # a single reference: exact match


def test_vqa_normalisation_follows_the_official_rules():
    assert normalize_vqa_answer("The Nikon.") == "nikon"
    assert normalize_vqa_answer("Two") == "2"
    assert normalize_vqa_answer("dont know") == "don't know"
    assert normalize_vqa_answer("coca-cola") == "coca cola"
    assert normalize_vqa_answer("- t-shirt") == "tshirt"  # a mark beside a space goes everywhere
    assert normalize_vqa_answer("3.5") == "3.5"
    assert normalize_vqa_answer("1,000") == "1000"
    assert vqa_accuracy("an apple", ["apple"] * 10) == 1.0


def test_vizwiz_scores_unanswerable_like_any_answer(fixture_root):
    task = make("vizwiz", fixture_root)
    sample = Sample(
        id="q",
        question="What is this?",
        answer="unanswerable",
        answers=["unanswerable"] * 6 + ["blurry"] * 2 + ["keyboard"] * 2,
    )
    assert task.reward("Unanswerable.", sample) == 1.0
    assert task.reward("keyboard", sample) == pytest.approx(0.6)
    samples = task.load("train", None)
    assert any(s.answer == "unanswerable" and s.meta["answerable"] == 0 for s in samples)
    # the lmms-lab/VizWiz-VQA schema: answers as plain strings, `category`
    row = {
        "question_id": "VizWiz_val_1",
        "question": "What is this?",
        "answers": ["blue"] * 10,
        "category": "other",
    }
    mapped = task.to_sample(row, "VizWiz_val_1", ())
    assert mapped.answer == "blue" and mapped.meta["answer_type"] == "other"


def test_geometry_answers_are_graded_by_easyr1s_math_grader():
    """mathruler's grade_answer, the paper's reward: equivalent forms match, rounded decimals
    and other numbers do not."""
    assert math_equivalent("3\\sqrt{3}", "3 \\sqrt 3")
    assert math_equivalent("\\frac{40}{3}", "40/3")
    assert math_equivalent("x = 52", "52")
    assert math_equivalent("52^\\circ", "52")
    assert math_equivalent("\\dfrac{5\\sqrt{3}}{2}", "\\frac{5\\sqrt{3}}{2}")
    assert math_equivalent("so the answer is \\boxed{22.5}", "\\frac{45}{2}")
    assert not math_equivalent("5.196", "3\\sqrt{3}")  # the grader is exact, as in training
    assert not math_equivalent("51", "52")
    assert not math_equivalent("__import__('os').getcwd()", "1")
    assert not math_equivalent("", "1")


def test_geometry_is_free_form_by_default_and_multiple_choice_only_when_asked(fixture_root):
    table = loaders.open_split(make("geometry3k", fixture_root).location(), "test")
    assert "choices" in table.dataset.column_names  # hiyouga/geometry3k rows carry options
    free = make("geometry3k", fixture_root).load("test", None)
    assert all(s.choices is None and s.answer == s.answers[0] for s in free)
    sample = free[0]
    assert "Options:" not in make("geometry3k", fixture_root).prompt(sample)
    task = make("geometry3k", fixture_root)
    assert task.reward(sample.answer, sample) == 1.0
    assert task.reward("B", sample) == 0.0  # a letter is no answer to a free-form question

    chosen = make("geometry3k", fixture_root, multiple_choice=True)
    row = {"problem": "<image>Find x.", "answer": "3\\sqrt{3}", "choices": ["3", "3\\sqrt{3}", "6", "9"]}
    mc = chosen.to_sample(row, "g1", ())
    assert mc.answer == "B" and mc.question.startswith("Question: Find x.")
    assert chosen.reward("B", mc) == 1.0 and chosen.reward("3\\sqrt{3}", mc) == 1.0
    assert chosen.reward("C", mc) == 0.0
    assert "option's letter" in chosen.prompt(mc)


def test_clevr_reads_the_answer_tag_and_accepts_number_words(fixture_root):
    task = make("clevr", fixture_root)
    row = {"problem": "How many objects are there?", "solution": "<think>1, 2, 3</think><answer> 3 </answer>"}
    sample = task.to_sample(row, "c1", ())
    assert sample.answer == "3" and sample.meta["rationale"] == "1, 2, 3"
    assert task.reward("three", sample) == 1.0 and task.reward("3 objects", sample) == 1.0
    assert task.reward("4", sample) == 0.0
    assert task.score("<think>count</think><answer>3</answer>", sample, cot=True) == 1.0


def test_pope_f1_on_a_hand_computed_confusion():
    gold = ["yes", "yes", "yes", "yes", "no", "no"]
    said = ["Yes, there is.", "yes", "No.", "There is no dog.", "yes", "It is not there."]
    samples = [
        Sample(id=str(i), question="Is there a dog in the image?", answer=a) for i, a in enumerate(gold)
    ]
    report = pope_f1(said, samples)
    # TP = 2, FN = 2, FP = 1, TN = 1: P = 2/3, R = 1/2, F1 = 2PR / (P + R) = 4/7
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == pytest.approx(1 / 2)
    assert report["f1"] == pytest.approx(4 / 7)
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["yes_ratio"] == pytest.approx(3 / 6)


def test_mmlu_pro_scores_ten_letters_up_to_j(fixture_root):
    task = make("mmlu_pro", fixture_root)
    samples = task.load("test", None)
    last = next(s for s in samples if s.answer == "J")
    assert len(last.choices) == 10 and "(J) " + last.choices[9] in task.prompt(last)
    for said in ("J", "(J)", "J. " + last.choices[9], "The answer is (J).", last.choices[9]):
        assert task.reward(said, last) == 1.0, said
    assert task.reward("I", last) == 0.0
    short = next(s for s in samples if len(s.choices) < 10)
    assert task.reward("J", short) == 0.0  # a letter past the options never counts


def test_mmmu_options_parsing_and_subjects(fixture_root):
    assert parse_options("['$6', '$7', '$8', '$9']", "s") == ["$6", "$7", "$8", "$9"]
    assert parse_options("[]", "s") == []
    with pytest.raises(UserError, match="validation_Art_3"):
        parse_options("['unclosed", "validation_Art_3")
    task = make("mmmu", fixture_root)
    samples = task.load("validation", None)
    assert {s.id.split("_")[1] for s in samples} == {"Accounting", "Art"}  # every subject config
    assert len(make("mmmu", fixture_root, hf_config="Art").load("validation", None)) == N // 2
    choice = next(s for s in samples if s.choices)
    assert "<image 1>" not in choice.question and choice.answer in "ABCD"
    open_question = next(s for s in samples if not s.choices)
    assert task.reward(open_question.answer + ".0", open_question) == 1.0
    assert "single word or phrase" in task.prompt(open_question)


def test_mmmu_passes_every_referenced_image_in_order(fixture_root):
    task = make("mmmu", fixture_root)
    table = loaders.open_split(task.location(), "validation")
    rows = table.dataset.to_list()
    samples = {s.meta["row"]: s for s in task.load("validation", None)}
    several = 0
    for index, row in enumerate(rows):
        tags = sorted({int(k) for k in re.findall(r"<image (\d+)>", row["question"] + row["options"])})
        sample = samples[index]
        assert [ref.column for ref in sample.images] == [f"image_{k}" for k in tags]
        for ref, k in zip(pictures(sample), tags):
            stored = Image.open(io.BytesIO(row[f"image_{k}"]["bytes"])).convert("RGB")
            assert np.array_equal(np.asarray(ref), np.asarray(stored))
        several += len(tags) > 1
    assert several  # the fixture has questions (and options) that reference several images


# ---------------------------------------------------------------------------------------------
# Sources and errors


def _hub_snapshot(hf_home: Path, hf_id: str) -> Path:
    repo = hf_home / "hub" / f"datasets--{hf_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_hf_id_reads_a_hub_snapshot_with_per_split_configs_and_paired_images(tmp_path):
    """lmms-lab/GQA: questions in `<split>_balanced_instructions`, images in `<split>_balanced_images`."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    snapshot = _hub_snapshot(tmp_path / "hf_home", "lmms-lab/GQA")
    red, blue = Image.new("RGB", (28, 28), (255, 0, 0)), Image.new("RGB", (28, 28), (0, 0, 255))
    questions = [
        {
            "id": "q1",
            "imageId": "n1",
            "question": "What color is it?",
            "answer": "red",
            "fullAnswer": "It is red.",
        },
        {
            "id": "q2",
            "imageId": "n2",
            "question": "What color is it?",
            "answer": "blue",
            "fullAnswer": "It is blue.",
        },
    ]
    Dataset.from_list(questions).to_parquet(
        str(snapshot / "testdev_balanced_instructions" / "testdev-00000-of-00001.parquet")
    )
    Dataset.from_list(
        [{"id": "n2", "image": blue}, {"id": "n1", "image": red}],
        features=Features({"id": Value("string"), "image": ImageFeature()}),
    ).to_parquet(str(snapshot / "testdev_balanced_images" / "testdev-00000-of-00001.parquet"))

    task = make("gqa", None, hf_id="lmms-lab/GQA", hf_config="{split}_balanced_instructions")  # the cache
    assert task.location().available() == "hf cache"
    samples = {s.id: s for s in task.load("testdev", None)}
    assert pictures(samples["q1"])[0].getpixel((0, 0)) == (255, 0, 0)
    assert pictures(samples["q2"])[0].getpixel((0, 0)) == (0, 0, 255)
    assert samples["q2"].meta["rationale"] == "It is blue."


def test_hf_id_reads_arrow_files_prepared_by_load_dataset(tmp_path):
    from datasets import Dataset

    rows = [
        {
            "question_id": str(i),
            "question": "Is there a cat in the image?",
            "answer": a,
            "image": Image.new("RGB", (28, 28)),
            "category": "random",
        }
        for i, a in enumerate(["yes", "no", "no"])
    ]
    saved = tmp_path / "saved"
    Dataset.from_list(rows).save_to_disk(str(saved))
    prepared = tmp_path / "hf_home" / "datasets" / "lmms-lab___pope" / "default" / "0.0.0" / "f00d"
    prepared.mkdir(parents=True)
    shutil.copy(next(saved.glob("*.arrow")), prepared / "pope-test.arrow")

    task = make("pope", None, hf_id="lmms-lab/POPE")
    samples = task.load("test", None)
    assert [s.answer for s in samples] == ["yes", "no", "no"]
    assert pictures(samples[0])[0].size == (28, 28)
    with pytest.raises(UserError, match=r"split 'validation' of config default of lmms-lab/POPE is not in the "
                                        r"datasets cache .*lmms-lab___pope; run `hf download lmms-lab/POPE"):
        make("pope", None, hf_id="lmms-lab/POPE", hf_config="default").load("validation", None)


def test_missing_local_path_names_the_path(tmp_path):
    task = make("textvqa", tmp_path, path="textvqa")
    with pytest.raises(UserError) as error:
        task.load("train", 4)
    assert str(tmp_path / "textvqa") in str(error.value)


def test_uncached_hf_id_says_how_to_provide_it(tmp_path):
    task = make("pathvqa", tmp_path / "data")
    with pytest.raises(UserError) as error:
        task.load("train", 4)
    message = str(error.value)
    assert "flaviagiammarino/path-vqa" in message
    assert f"hf download flaviagiammarino/path-vqa --repo-type dataset --cache-dir {tmp_path / 'data'}/hub" in message
    assert "source.path" in message


def test_an_uncached_hf_id_names_every_cache_searched(tmp_path):
    """<data.root>/hub (where the download commands write) whether or not it exists yet, the
    default hub cache and the datasets cache."""
    default = tmp_path / "hf_home" / "hub"
    (tmp_path / "data").mkdir()
    for _ in range(2):
        with pytest.raises(UserError) as error:
            make("pathvqa", tmp_path / "data").load("train", 4)
        assert (f"flaviagiammarino/path-vqa is not in a Hugging Face hub cache (searched {tmp_path / 'data' / 'hub'}, "
                f"{default}) nor in the datasets cache ({tmp_path / 'hf_home' / 'datasets'})") in str(error.value)
        assert "`lite-cpt data download RECIPE` fetches it" in str(error.value)
        (tmp_path / "data" / "hub").mkdir(exist_ok=True)


def test_a_missing_split_of_a_saved_dataset_dict_lists_its_splits(tmp_path):
    """`DatasetDict.save_to_disk`: one folder per split, holding data-*.arrow, state.json, dataset_info.json."""
    from datasets import Dataset, DatasetDict

    rows = {"question": ["Is this a tumour?"], "answer": ["yes"]}
    DatasetDict({"train": Dataset.from_dict(rows), "test": Dataset.from_dict(rows)}).save_to_disk(str(tmp_path / "mine"))
    location = resolve_location(SimpleNamespace(path="mine"), tmp_path)
    assert len(loaders.open_split(location, "test").dataset) == 1
    with pytest.raises(UserError, match=r"no data files for split 'validation' .*; splits found: test, train$"):
        loaders.open_split(location, "validation")


def test_the_default_caches_follow_hf_home_then_xdg_cache_home_then_the_home_directory(tmp_path, monkeypatch):
    for name in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "me"))
    assert hf_hub_cache() == tmp_path / "me" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_datasets_cache() == tmp_path / "xdg" / "huggingface" / "datasets"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hf_hub_cache() == tmp_path / "hf" / "hub"


def test_an_unreadable_data_file_is_named_with_its_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "test.parquet").write_bytes(b"not a parquet file")
    location = resolve_location(SimpleNamespace(path="mine"), tmp_path)
    with pytest.raises(UserError, match=rf"cannot read {re.escape(str(tmp_path / 'mine'))} \(test.parquet\): "):
        loaders.open_split(location, "test")


def test_a_required_column_the_split_lacks_is_named_with_the_columns_it_has():
    from datasets import Dataset

    table = loaders.SplitTable(Dataset.from_dict({"question": ["q"], "answer": ["a"]}), range(1), Path("."),
                               "data/scienceqa", "train")
    with pytest.raises(UserError, match=r"^data/scienceqa: split 'train' has no column 'image' \(has: question, answer\)$"):
        loaders.non_null_rows(table, ("image",))


def test_missing_split_lists_the_splits_there_are(fixture_root):
    with pytest.raises(UserError, match=r"split 'test'.*splits found: train, validation"):
        make("textvqa", fixture_root).load("test", 4)  # hub layout: data/<split>-*.parquet


def test_unreadable_and_missing_images_name_the_sample_and_file(fixture_root, tmp_path):
    broken = tmp_path / "vizwiz"
    shutil.copytree(fixture_root / "vizwiz", broken)
    rows = json.loads((broken / "val.json").read_text())
    (broken / "val" / rows[0]["image"]).write_bytes(b"not a jpeg")
    first = next(s for s in make("vizwiz", tmp_path).load("val", None) if s.id == rows[0]["image"])
    with pytest.raises(UserError, match=f"sample {rows[0]['image']} cannot be opened: .*{rows[0]['image']}"):
        pictures(first)
    (broken / "val" / rows[0]["image"]).unlink()
    with pytest.raises(
        UserError, match=f"sample {rows[0]['image']} not found: {rows[0]['image']} \\(looked in .*vizwiz/val"
    ):
        pictures(first)


def test_relative_paths_resolve_under_the_data_root(fixture_root, monkeypatch, tmp_path):
    task = make("vizwiz", fixture_root)
    assert task.location().path == fixture_root / "vizwiz" and task.location().available() == "local"
    monkeypatch.chdir(fixture_root.parent)
    relative_root = Path(fixture_root.name)
    samples = make("gqa", relative_root).load("testdev", None)  # image files under a relative root
    assert len(samples) == N and pictures(samples[0])
    monkeypatch.chdir(fixture_root)
    assert len(make("vizwiz", None).load("val", None)) == N  # no data.root: relative to the working directory
    absolute = make("vizwiz", tmp_path, path=str(fixture_root / "vizwiz"))
    assert absolute.location().path == fixture_root / "vizwiz"


def test_split_slice_syntax():
    assert list(loaders.split_range("train[:80%]", 10)) == list(range(8))
    assert list(loaders.split_range("train[80%:]", 10)) == [8, 9]
    assert list(loaders.split_range("val[2:-2]", 6)) == [2, 3]
    assert list(loaders.split_range("test", 3)) == [0, 1, 2]
    with pytest.raises(UserError, match="not a split name"):
        loaders.parse_split("train[::2]")


def test_default_source_is_the_type_directory_then_the_hub_cache_under_the_root(fixture_root):
    config = BenchmarkConfig(name="pope", type="pope")  # no source given
    task = build_task(config, fixture_root, 0, benchmark=True)
    assert task.location().path == fixture_root / "pope" and task.location().hf_id == "lmms-lab/POPE"
    assert task.location().available() == "hf cache"  # <data.root>/hub
    assert len(task.load("test", 3)) == 3


def test_a_split_placeholder_in_the_path_picks_one_file_per_split(fixture_root):
    task = make("vizwiz", fixture_root, path="vizwiz/{split}.json")
    assert task.location().available() == "local"
    train, test = task.load("train", None), task.load("val", None)
    assert len(train) == len(test) == N and not {s.id for s in train} & {s.id for s in test}
    assert all(pictures(s) for s in test)  # <split>/ beside the file


def test_a_keyed_json_file_is_read_entry_by_entry_whatever_the_chunk_size(tmp_path):
    """GQA's official questions: one JSON object keyed by question id, read without holding it whole."""
    questions = {
        "201307251": {"imageId": "n161313", "question": "Is it overcast?", "answer": "no", "fullAnswer": "No, it is clear."},
        "201640614": {"imageId": "n235859", "question": "Who is wearing a \"hat\"?", "answer": "man",
                      "fullAnswer": "The man is wearing a hat, {not} [the] woman: yes."},
        "20": {"imageId": "n1", "question": "What is it?", "answer": "\u00e9clair", "fullAnswer": None},
    }
    path = tmp_path / "testdev_balanced_questions.json"
    path.write_text(json.dumps(questions, indent=1), encoding="utf-8")
    for chunk_size in (1, 7, 64, 1 << 20):
        assert list(loaders.iter_keyed_json(path, chunk_size)) == list(questions.items()), chunk_size
    path.write_text(json.dumps(list(questions.values())))
    with pytest.raises(UserError, match="does not hold a JSON object"):
        list(loaders.iter_keyed_json(path))
    whole = json.dumps(questions)
    path.write_text(whole[:-40])  # cut short by an interrupted download, inside an entry
    with pytest.raises(json.JSONDecodeError):
        list(loaders.iter_keyed_json(path, 16))
    with pytest.raises(UserError, match=r"cannot read .*testdev_balanced_questions.json: .*char"):
        loaders.open_keyed_json(path, "testdev", "id", ("question",))
    path.write_text(whole[: whole.index(', "20"')])  # cut short between two entries
    with pytest.raises(UserError, match="ends before the object it holds is closed: the file is cut short"):
        list(loaders.iter_keyed_json(path, 16))
    with pytest.raises(UserError) as error:
        loaders.open_keyed_json(path, "testdev", "id", ("question",))
    assert str(error.value).startswith(f"{path} ends before the object")  # said once, not wrapped


def test_a_keyed_json_file_whose_first_entries_lack_a_field_reads_every_entry(tmp_path):
    """Official GQA files leave out fields (the test questions have no answers): the columns stay
    strings however far into the file a field first appears."""
    questions = {str(i): {"imageId": f"n{i}", "question": "Is it day?",
                          **({"answer": "yes", "fullAnswer": "Yes, it is day."} if i >= 1200 else {})}
                 for i in range(1300)}
    path = tmp_path / "val_balanced_questions.json"
    path.write_text(json.dumps(questions))
    table = loaders.open_keyed_json(path, "val[1200:]", "id", ("imageId", "question", "answer", "fullAnswer"))
    assert table.split == "val" and table.rows == range(1200, 1300)
    rows = loaders.read_text_rows(table, [0, 1250])
    assert rows == [{"id": "0", "imageId": "n0", "question": "Is it day?", "answer": None, "fullAnswer": None},
                    {"id": "1250", "imageId": "n1250", "question": "Is it day?", "answer": "yes",
                     "fullAnswer": "Yes, it is day."}]
