"""Tasks declared in the recipe (`type: custom`): the shipped example re-declares four built-in
tasks in YAML and must give the same samples, prompts and scores as the built-in types on the
fixtures; every metric of the registry against hand-computed answers; the errors a user can make."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from lite_cpt.cli import app
from lite_cpt.data.fixtures import write_fixtures
from lite_cpt.data.images import decode_image
from lite_cpt.errors import UserError
from lite_cpt.train.phase import Example
from lite_cpt.recipe import load_recipe, recipe_from_dict
from lite_cpt.arms.rl.settings import RFTConfig
from lite_cpt.recipe_tasks import TaskConfig, benchmark_config, task_config
from lite_cpt.train.rft import reward_parts
from lite_cpt.tasks import build_task
from lite_cpt.tasks.base import Sample
from lite_cpt.tasks.scorers import METRICS, ScoreOptions

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "recipes" / "examples" / "custom_tasks.yaml"
N = 8


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return write_fixtures(tmp_path_factory.mktemp("data"), n=N, seed=0)


@pytest.fixture(autouse=True)
def _private_hf_home(private_hf_home):
    """Every test here reads datasets through its own empty Hugging Face cache."""


def declared(name: str, **changes) -> TaskConfig:
    """The example recipe's YAML declaration of task `name`, with `changes` applied."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    task = next(t for t in raw["tasks"] if t["name"] == name)
    return task_config(**{**task, **changes})


def twins(name: str, root: Path, **changes):
    """(built-in task, the same task declared in YAML), both reading the fixtures."""
    return build_task(task_config(name=name, type=name, **changes), root), build_task(declared(name, **changes), root)


def predictions(sample: Sample, others: list[Sample]) -> list[str]:
    """Real-looking answers to a sample: right in several forms, near misses, wrong."""
    answer = sample.answer
    said = [answer, f"{answer.upper()}.", f"The answer is {answer}", f"({answer})", f" {answer} objects",
            "three", "3.0", "yes", "No, it is not.", "Yes", "(B)", "B. blue", "qwertyuiop", ""]
    said += [o.answer for o in others[:3]] + (sample.answers or [])[:4] + (sample.choices or [])
    with_tags = [f"<think>let me see</think><answer>{s}</answer>" for s in said[:6]]
    return said + with_tags + [f"<answer>{answer}</answer> <answer>x</answer>"]


@pytest.mark.parametrize("name", ["pathvqa", "clevr", "textvqa", "scienceqa"])
def test_yaml_declared_task_equals_the_built_in_type(fixture_root, name):
    built_in, custom = twins(name, fixture_root)
    assert type(custom).__name__ == "CustomTask"
    for split in (built_in.config.source.train_split, built_in.config.source.test_split):
        keys = {"hf_id", "hf_config", "train_split", "test_split"}  # the built-in also looks in data/<name>
        assert custom.config.source.model_dump(include=keys) == built_in.config.source.model_dump(include=keys)
        expected, got = built_in.load(split, None), custom.load(split, None)
        assert len(got) == len(expected) == custom.count(split) > 0
        for b, c in zip(expected, got):
            assert (c.id, c.question, c.answer, c.answers, c.choices) == (b.id, b.question, b.answer, b.answers, b.choices)
            assert c.meta.get("rationale", "") == b.meta.get("rationale", "")
            assert [r.describe() for r in c.images] == [r.describe() for r in b.images]
            assert [custom.prompt(c, cot) for cot in (False, True)] == [built_in.prompt(b, cot) for cot in (False, True)]
            assert custom.target(c, cot=True) == built_in.target(b, cot=True)
            for text in predictions(b, expected):
                for cot in (False, True):
                    assert custom.score(text, c, cot) == built_in.score(text, b, cot), (text, cot)
                    assert custom.rl_score(text, c, cot) == built_in.rl_score(text, b, cot), (text, cot)
                assert custom.binary_reward(text, c) == built_in.binary_reward(text, b), text


@pytest.mark.parametrize("name", ["textvqa", "clevr"])
def test_yaml_declared_task_gives_the_same_rl_rewards(fixture_root, name):
    """The GRPO reward ((1 - w) accuracy + w format), binary or soft, first or last answer tag."""
    for options in ({}, {"rl_reward": "binary", "answer_tag": "first", "format_weight": 0.5}):
        built_in, custom = twins(name, fixture_root, **options)
        samples = built_in.load(built_in.config.source.test_split, None)
        mine = custom.load(custom.config.source.test_split, None)
        rft = RFTConfig()
        scores = []
        for b, c in zip(samples, mine):
            for text in predictions(b, samples):
                expected = reward_parts(Example(built_in, b), text, rft)
                assert reward_parts(Example(custom, c), text, rft) == expected, text
                scores.append(expected[0])
        assert min(scores) < max(scores)  # the answers above are not all scored alike


MMLU_PRO_IN_YAML = """
name: mmlu_pro
type: custom
source: {hf_id: TIGER-Lab/MMLU-Pro, test_split: test}
custom:
  columns: {question: question, answer: answer, choices: options, id: question_id, rationale: cot_content,
            images: []}
  metric: choice
"""


def test_a_general_benchmark_declared_in_yaml_equals_the_built_in_one(fixture_root):
    built_in = build_task(benchmark_config(name="mmlu_pro", type="mmlu_pro"), fixture_root, benchmark=True)
    custom = build_task(benchmark_config(**yaml.safe_load(MMLU_PRO_IN_YAML)), fixture_root, benchmark=True)
    expected, got = built_in.load("test", None), custom.load("test", None)
    assert len(got) == len(expected) == N
    for b, c in zip(expected, got):
        assert (c.id, c.question, c.answer, c.choices, c.images) == (b.id, b.question, b.answer, b.choices, ())
        assert c.meta["rationale"] == b.meta["rationale"]
        assert [custom.prompt(c, cot) for cot in (False, True)] == [built_in.prompt(b, cot) for cot in (False, True)]
        for text in predictions(b, expected):
            assert custom.score(text, c) == built_in.score(text, b), text
    recipe = recipe_from_dict({"name": "t", "tasks": [{"name": "a", "type": "mini_clevr"}], "arms": [{"name": "sft"}],
                               "evaluation": {"general": [yaml.safe_load(MMLU_PRO_IN_YAML)]}})
    assert recipe.evaluation.general[0].custom.metric == "choice"


def test_the_example_recipe_loads_its_fixtures(fixture_root):
    recipe = load_recipe(EXAMPLE, [f"data.root={fixture_root}"])
    assert [t.type for t in recipe.tasks] == ["custom"] * 4
    for config in recipe.tasks:
        task = build_task(config, fixture_root, recipe.seed)
        sample = task.load(config.source.test_split, 1)[0]
        assert task.score(sample.answer, sample) == 1.0


# ---------------------------------------------------------------------------------------------
# The metric registry, each against hand-computed answers


def sample(answer: str, answers=None, choices=None) -> Sample:
    return Sample(id="s", question="q", answer=answer, answers=answers, choices=choices)


METRIC_CASES = {
    "exact": [
        (sample("metastatic carcinoma"), "Metastatic carcinoma.", 1.0),
        (sample("the lung"), "lung", 1.0),  # articles dropped on both sides
        (sample("2"), "two", 1.0),  # VQA normalisation: number words to digits
        (sample("lung"), "lungs", 0.0),
        (sample("yes", answers=["yes", "y"]), "Y", 1.0),  # any accepted answer
    ],
    "vqa_accuracy": [
        # 2 of 10 humans said "dslr": each of the 8 leave-one-out sets without a dslr voter
        # counts min(2/3, 1), the 2 with one count 1/3 -> (8 * 2/3 + 2 * 1/3) / 10 = 0.6
        (sample("nikon", answers=["nikon"] * 8 + ["dslr"] * 2), "dslr", 0.6),
        (sample("nikon", answers=["nikon"] * 8 + ["dslr"] * 2), "Nikon", 1.0),
        (sample("stop", answers=["stop"]), "stop", 1.0),  # one answer: exact match
    ],
    "choice": [
        (sample("B", choices=["red", "blue", "green"]), "(B)", 1.0),
        (sample("B", choices=["red", "blue", "green"]), "The answer is blue", 1.0),  # the option's text
        (sample("B", choices=["red", "blue", "green"]), "B. blue", 1.0),
        (sample("B", choices=["red", "blue", "green"]), "A", 0.0),
        (sample("B", choices=["red", "blue", "green"]), "D", 0.0),  # no option D
    ],
    "math": [
        (sample("0.5"), "\\frac{1}{2}", 1.0),
        (sample("48"), "48^\\circ", 1.0),
        (sample("3\\sqrt{3}"), "The area is \\boxed{3\\sqrt{3}}", 1.0),
        (sample("3\\sqrt{3}"), "\\boxed{3\\sqrt{2}}", 0.0),
    ],
    "number": [
        (sample("3"), "three", 1.0),
        (sample("3"), "3 objects", 1.0),
        (sample("3"), "3.0000001", 1.0),  # within 1e-6 * max(1, 3)
        (sample("3"), "3.01", 0.0),
        (sample("1,200"), "1200", 1.0),  # thousands separators ignored
        (sample("3"), "none", 0.0),  # 'none' is 0 after the VQA normalisation
    ],
    "yes_no": [
        (sample("yes"), "Yes, it is.", 1.0),
        (sample("no"), "No.", 1.0),
        (sample("no"), "There is not a cat.", 1.0),  # a denial
        (sample("yes"), "qwertyuiop", 0.0),  # neither: no credit (POPE itself would say yes)
        (sample("yes"), "It is not, yes.", 0.0),  # 'not' wins, as POPE reads it
    ],
}


def test_every_registered_metric_has_hand_computed_cases():
    assert set(METRIC_CASES) == set(METRICS)


@pytest.mark.parametrize("metric, case", [(m, c) for m, cases in METRIC_CASES.items() for c in cases],
                         ids=lambda v: v if isinstance(v, str) else repr(v[1]))
def test_metric_against_hand_computed_answer(metric, case):
    gold, prediction, expected = case
    assert METRICS[metric].score(prediction, gold, ScoreOptions()) == pytest.approx(expected)


@pytest.mark.parametrize("normalize, prediction, expected", [
    ("vqa", "The Lung.", 1.0), ("text", "The Lung.", 1.0), ("lower", "The Lung.", 0.0),
    ("lower", "  LUNG ", 1.0), ("none", "Lung", 0.0), ("none", " lung ", 1.0),
])
def test_exact_metric_normalisation_options(normalize, prediction, expected):
    assert METRICS["exact"].score(prediction, sample("lung"), ScoreOptions(normalize=normalize)) == expected


def test_number_metric_tolerance_option():
    options = ScoreOptions(tolerance=0.05)  # relative: 5 % of 100
    assert METRICS["number"].score("104.9", sample("100"), options) == 1.0
    assert METRICS["number"].score("105.1", sample("100"), options) == 0.0


# ---------------------------------------------------------------------------------------------
# Custom rewards by import path, and what a user can get wrong


def custom_recipe(custom: dict, **task) -> dict:
    task = {"name": "mine", "type": "custom", "source": {"path": "mine"}, "custom": custom, **task}
    return {"name": "t", "tasks": [task], "arms": [{"name": "sft"}]}


def write_reward_module(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "user_rewards.py").write_text(textwrap.dedent('''
        def half_credit(prediction, sample):
            """1 for the answer, 0.5 for its first letter, else 0."""
            if prediction.strip() == sample.answer:
                return 1.0
            return 0.5 if prediction.strip()[:1] == sample.answer[:1] else 0.0

        def one_argument(prediction):
            return 1.0

        def returns_text(prediction, sample):
            return "right"

        NOT_A_FUNCTION = 3
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_rewards", raising=False)


def test_custom_reward_by_import_path_scores_and_rewards(tmp_path, monkeypatch):
    write_reward_module(tmp_path, monkeypatch)
    recipe = recipe_from_dict(custom_recipe({"reward": "user_rewards:half_credit"}))
    task = build_task(recipe.tasks[0])
    gold = sample("lung")
    assert task.score("lung", gold) == 1.0
    assert task.score("liver", gold) == 0.5
    assert task.score("<answer>liver</answer>", gold, cot=True) == 0.5  # it sees the extracted answer
    assert task.binary_reward("liver", gold) == 0.0
    assert reward_parts(Example(task, gold), "<think>x</think><answer>liver</answer>", RFTConfig()) == (
        pytest.approx(0.9 * 0.5 + 0.1 * 1.0), 0.5)
    by_file = recipe_from_dict(custom_recipe({"reward": f"{tmp_path / 'user_rewards.py'}:half_credit"}))
    assert build_task(by_file.tasks[0]).score("liver", gold) == 0.5


@pytest.mark.parametrize("reward, message", [
    ("no_such_package.rewards:score", "module 'no_such_package.rewards' not found: install it or add its directory"),
    ("user_rewards:missing", "module 'user_rewards' has no attribute 'missing' (its functions: half_credit, "
                           "one_argument, returns_text)"),
    ("user_rewards:NOT_A_FUNCTION", "user_rewards:NOT_A_FUNCTION is not a function (it is a int)"),
    ("user_rewards:one_argument", "user_rewards:one_argument must take (prediction, sample) and return a float; "
                                "its signature is one_argument(prediction)"),
    ("user_rewards", "reward 'user_rewards' must be `package.module:function` or `path/to/file.py:function`"),
    ("nowhere/rewards.py:score", "reward file nowhere/rewards.py not found"),
])
def test_custom_reward_errors_name_the_key_and_the_fix(tmp_path, monkeypatch, reward, message):
    write_reward_module(tmp_path, monkeypatch)
    with pytest.raises(UserError) as info:
        recipe_from_dict(custom_recipe({"reward": reward}), "r.yaml")
    assert "tasks.0.custom.reward: " + message in str(info.value)


@pytest.mark.parametrize("functions, shown", [
    (0, "(its functions: none)"),
    (12, "(its functions: f01, f02, f03, f04, f05, f06, f07, f08, f09, f10, ...)"),
])
def test_a_missing_reward_lists_at_most_ten_of_the_modules_functions(tmp_path, monkeypatch, functions, shown):
    body = "".join(f"def f{k:02d}(prediction, sample):\n    return 1.0\n" for k in range(1, functions + 1))
    (tmp_path / "many_rewards.py").write_text(body + "LIMIT = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "many_rewards", raising=False)
    with pytest.raises(UserError) as info:
        recipe_from_dict(custom_recipe({"reward": "many_rewards:score"}), "r.yaml")
    assert f"module 'many_rewards' has no attribute 'score' {shown}" in str(info.value)


def test_a_choice_answer_written_as_a_one_character_option_gives_that_options_letter():
    recipe = recipe_from_dict(custom_recipe({"metric": "choice", "columns": {"choices": "options", "images": []}}))
    task = build_task(recipe.tasks[0])
    row = {"question": "How many legs has a tripod?", "options": ["2", "3", "4"], "answer": "3"}
    assert task.to_sample(row, "s1", ()).answer == "B"
    assert task.to_sample({**row, "answer": "c"}, "s2", ()).answer == "C"  # a letter, any case
    with pytest.raises(UserError, match="answer 'E' is neither an option letter"):
        task.to_sample({**row, "answer": "E"}, "s3", ())


def test_a_reward_that_returns_no_number_is_a_clear_error(tmp_path, monkeypatch):
    write_reward_module(tmp_path, monkeypatch)
    task = build_task(recipe_from_dict(custom_recipe({"reward": "user_rewards:returns_text"})).tasks[0])
    with pytest.raises(UserError, match="reward user_rewards:returns_text returned 'right' for sample s; "
                                        "it must return a finite number"):
        task.score("x", sample("lung"))


@pytest.mark.parametrize("custom, task, message", [
    ({"metric": "exactly"}, {}, "tasks.0.custom.metric: got 'exactly'; allowed values: 'exact', 'vqa_accuracy', "
                                "'choice', 'math', 'number' or 'yes_no'"),
    ({}, {}, "tasks.0.custom: give exactly one of metric (exact, vqa_accuracy, choice, math, number, yes_no) or reward"),
    ({"metric": "exact", "reward": "os.path:join"}, {}, "give exactly one of metric"),
    ({"metric": "choice", "normalize": "text"}, {}, "normalize applies to the metrics exact, number, not to choice"),
    ({"metric": "exact", "tolerance": 0.1}, {}, "tolerance applies to the metrics number, not to exact"),
    ({"metric": "exact", "prompt": "Q: {} A:"}, {}, "tasks.0.custom.prompt: placeholder {} is not a column name"),
    ({"metric": "exact", "columns": {"questions": "q"}}, {},
     "tasks.0.custom.columns.questions: unknown key; allowed keys: question, answer, images, choices"),
    ({"metric": "exact"}, {"source": {}}, "'mine' of type custom needs source.path or source.hf_id"),
    ({"metric": "exact"}, {"prompt": "{question}"}, "a custom task's prompts are custom.prompt and custom.cot_prompt"),
    ({"metric": "exact"}, {"type": "pathvqa"}, "tasks.0.custom: unknown key for a task of type 'pathvqa' (it is a "
                                               "setting of custom; "),
    (None, {}, "tasks.0.custom: Input should be a valid dictionary or instance of CustomTaskConfig"),
])
def test_custom_task_recipe_errors(custom, task, message):
    with pytest.raises(UserError) as info:
        recipe_from_dict(custom_recipe(custom, **task), "r.yaml")
    assert message in " ".join(str(info.value).split())


def test_a_column_the_data_lacks_is_named_with_the_columns_it_has(fixture_root):
    config = declared("pathvqa", custom={"metric": "exact", "columns": {"answer": "label"}})
    task = build_task(config, fixture_root)
    with pytest.raises(UserError, match=r"task 'pathvqa': custom.columns.answer names column 'label', but "
                                        r"hf:flaviagiammarino/path-vqa \(split 'test'\) has no such column; "
                                        r"its columns: answer, image, question"):
        task.load("test", 2)
    prompt_column = declared("pathvqa", custom={"metric": "exact", "prompt": "{question} ({organ})"})
    with pytest.raises(UserError, match="custom.prompt names column 'organ'"):
        build_task(prompt_column, fixture_root).load("test", 2)


@pytest.mark.parametrize("metric, message", [
    ("yes_no", "metric yes_no needs 'yes' or 'no' answers, got ["),
    ("number", "metric number needs numeric answers, got"),
])
def test_answers_a_metric_cannot_match_are_an_error(fixture_root, metric, message):
    task = build_task(declared("pathvqa", custom={"metric": metric}), fixture_root)
    with pytest.raises(UserError) as info:
        task.load("test", None)
    assert message in str(info.value) and "task 'pathvqa', sample pathvqa/test/" in str(info.value)


def test_a_yes_no_task_accepts_yes_and_no_in_any_case_and_prompts_any_sample(tmp_path):
    (tmp_path / "mine").mkdir()
    rows = [{"question": "Is the lesion malignant?", "answer": "Yes", "image": "a.png"},
            {"question": "Is there a mitosis?", "answer": "no", "image": "b.png"}]
    (tmp_path / "mine" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = recipe_from_dict(custom_recipe({"metric": "yes_no"}, source={"path": str(tmp_path / "mine")}))
    task = build_task(recipe.tasks[0])
    samples = task.load("test", None)
    assert [(s.answer, s.answers) for s in samples] == [("Yes", ["Yes"]), ("no", ["no"])]
    assert task.score("yes, it is", samples[0]) == 1.0 and task.score("No.", samples[0]) == 0.0
    # a sample built by hand (no row fields) is prompted from its question
    hand_made = Sample(id="h", question="Is it round?", answer="yes")
    assert task.prompt(hand_made) == "Is it round?\nAnswer yes or no."


def test_every_image_column_of_a_custom_task_gives_its_images_in_order(tmp_path):
    (tmp_path / "mine").mkdir()
    row = {"question": "What changed?", "answer": "the door", "before": "before.png", "after": ["after1.png", "after2.png"]}
    (tmp_path / "mine" / "test.jsonl").write_text(json.dumps(row) + "\n")
    custom = {"metric": "exact", "columns": {"images": ["before", "after"]}}
    task = build_task(recipe_from_dict(custom_recipe(custom, source={"path": str(tmp_path / "mine")})).tasks[0])
    [sample] = task.load("test", None)
    assert [ref.describe() for ref in sample.images] == ["before.png", "after1.png", "after2.png"]


def test_template_placeholders_read_row_columns(fixture_root):
    custom = {"metric": "exact", "columns": {"meta": ["answer"]},
              "prompt": "Pathology slide. {question}\nHint: {answer}",
              "cot_prompt": "{question} Reply as {{\"answer\": ...}}"}
    task = build_task(declared("pathvqa", custom=custom), fixture_root)
    for s in task.load("test", None):
        assert task.prompt(s) == f"Pathology slide. {s.question}\nHint: {s.answer}"
        assert task.prompt(s, cot=True) == f'{s.question} Reply as {{"answer": ...}}'
        assert s.meta["answer"] == s.answer


def test_a_list_of_images_column_gives_every_image(fixture_root):
    """Geometry3K keeps its diagram in `images`, a list of `Image` cells."""
    config = task_config(name="geometry", type="custom", source={"hf_id": "hiyouga/geometry3k"},
                        custom={"columns": {"question": "problem", "images": ["images"]}, "metric": "math"})
    custom, built_in = build_task(config, fixture_root), build_task(task_config(name="g", type="geometry3k"), fixture_root)
    for c, b in zip(custom.load("test", None), built_in.load("test", None)):
        assert [r.describe() for r in c.images] == [r.describe() for r in b.images] and c.images
        assert [decode_image(r).size for r in c.images] == [decode_image(r).size for r in b.images]
        assert custom.score(f"\\boxed{{{b.answer}}}", c) == built_in.score(f"\\boxed{{{b.answer}}}", b) == 1.0


def test_the_example_recipe_runs_end_to_end_on_the_fixtures(fixture_root, tmp_path):
    """The GRPO arm: rollouts scored by the declared metrics, evaluation after every task."""
    shrink = ["model.base_training.samples_per_task=8", "model.base_training.epochs=1", "model.lora.r=4",
              "model.lora.alpha=8", "model.gradient_checkpointing=false", "evaluation.generation.max_new_tokens=4",
              "tasks.*.test_size=2", "tasks.*.train_size=2", "arms.rft.max_steps_per_task=1",
              "arms=[{name: rft, max_steps_per_task: 1, rft: {group_size: 2, prompts_per_step: 2, max_new_tokens: 4}}]"]
    result = CliRunner().invoke(app, ["run", str(EXAMPLE), f"data.root={fixture_root}",
                                      f"output_dir={tmp_path}", *shrink])
    assert result.exit_code == 0, result.output
    matrix = json.loads((tmp_path / "custom_tasks" / "seed_0" / "rft" / "matrix.json").read_text())
    assert matrix["tasks"] == ["scienceqa", "textvqa", "pathvqa", "clevr"] and len(matrix["R"]) == 5


def readme_block(marker: str) -> str:
    """The fenced code block that follows `<!-- custom-task-example:MARKER -->` in docs/extending.md."""
    text = (ROOT / "docs" / "extending.md").read_text(encoding="utf-8")
    after = text.split(f"<!-- custom-task-example:{marker} -->", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def test_the_readme_example_recipe_and_reward_work_on_a_dataset_of_their_shape(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(readme_block("reward"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_rewards", raising=False)
    charts = tmp_path / "data" / "charts"
    (charts / "images").mkdir(parents=True)
    for split, counts in (("train", [3, 12]), ("test", [7, 20])):
        rows = []
        for i, count in enumerate(counts):
            Image.new("RGB", (28, 28), (10 * count, 0, 0)).save(charts / "images" / f"{split}{i}.png")
            rows.append({"image": f"images/{split}{i}.png", "question": "How many bars are there?",
                         "answer": str(count), "unit": "bars"})
        (charts / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "charts.yaml"
    path.write_text(readme_block("recipe"))
    recipe = load_recipe(path, [f"data.root={tmp_path / 'data'}"])
    counted, graded = (build_task(t, recipe.data.root, recipe.seed) for t in recipe.tasks)
    first = sorted(counted.load("test", None), key=lambda s: s.meta["row"])[0]
    assert counted.prompt(first) == "How many bars are there? Count the bars.\nAnswer with a number."
    assert decode_image(first.images[0]).getpixel((0, 0)) == (70, 0, 0)
    assert [counted.score(said, first) for said in ("7", "7.3", "7.4", "six")] == [1.0, 1.0, 0.0, 0.0]
    sample = sorted(graded.load("test", None), key=lambda s: s.meta["row"])[0]
    assert sample.meta["unit"] == "bars"
    assert [graded.score(said, sample) for said in ("7", "8 bars", "9", "none")] == [1.0, 0.5, 0.0, 0.0]
