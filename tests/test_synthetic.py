from lite_cpt.data import synthetic
from lite_cpt.tasks import BENCHMARK_TYPES, TASK_TYPES
from lite_cpt.tasks.base import choice_letter, exact_match, extract_answer, format_reward, numeric_match


def task(kind):
    return (TASK_TYPES.get(kind) or BENCHMARK_TYPES[kind])(kind, seed=0)


def test_seven_tasks_and_three_benchmarks_registered():
    assert set(synthetic.SEVEN) <= set(TASK_TYPES)
    assert set(synthetic.GENERAL) <= set(BENCHMARK_TYPES)
    assert len(synthetic.SEVEN) == 7


def test_deterministic_prefix_stable_and_splits_disjoint():
    for kind in synthetic.GENERATORS:
        a = synthetic.generate(kind, "train", 6, seed=1)
        b = synthetic.generate(kind, "train", 3, seed=1)
        assert [s.question for s in a[:3]] == [s.question for s in b]
        assert [s.answer for s in a[:3]] == [s.answer for s in b]
        if a[0].images:
            assert a[0].images[0].tobytes() == b[0].images[0].tobytes()
            assert a[0].images[0].size == (56, 56)
    train = {s.images[0].tobytes() for s in synthetic.generate("mini_clevr", "train", 40)}
    test = [s.images[0].tobytes() for s in synthetic.generate("mini_clevr", "test", 40)]
    # identical pictures can recur by chance (few objects), but the streams differ
    assert sum(t in train for t in test) < 40


def test_answers_are_in_each_tasks_answer_space():
    spaces = {
        "mini_scienceqa": set("ABCD"), "mini_textvqa": set("0123456789"),
        "mini_vizwiz": set(synthetic.COLOR_NAMES) | {"unanswerable"}, "mini_gqa": set(synthetic.COLOR_NAMES),
        "mini_pathvqa": {"yes", "no"}, "mini_clevr": {"1", "2", "3", "4"},
    }
    for kind, space in spaces.items():
        assert {s.answer for s in synthetic.generate(kind, "train", 80)} == space, kind


def test_gold_answer_scores_one_and_wrong_scores_zero():
    for kind in synthetic.GENERATORS:
        t = task(kind)
        for sample in synthetic.generate(kind, "test", 10):
            assert t.reward(sample.answer, sample) == 1.0
            assert t.reward("zzz", sample) == 0.0


def test_reward_helpers_on_hand_examples():
    assert choice_letter("(B) blue") == "B"
    assert choice_letter("C") == "C"
    assert choice_letter("green", ["red", "green"]) == "B"
    assert exact_match("The Red.", ["red"]) == 1.0
    assert numeric_match("area = 6", "6") == 1.0
    assert numeric_match("6.5", "6") == 0.0
    assert extract_answer("<think>x</think><answer> 4 </answer>") == "4"
    assert format_reward("<think>x</think><answer>4</answer>") == 1.0
    assert format_reward("4") == 0.0
    geometry = synthetic.generate("mini_geometry", "test", 1)[0]
    assert task("mini_geometry").score(f"<think>t</think><answer>{geometry.answer}</answer>", geometry, cot=True) == 1.0


def test_prompt_has_instruction_and_cot_variant():
    t = task("mini_scienceqa")
    sample = synthetic.generate("mini_scienceqa", "test", 1)[0]
    assert t.prompt(sample).endswith("Answer with the option's letter.")
    assert "<answer>" in t.prompt(sample, cot=True)
    assert t.target(sample, cot=True).startswith("<think>")
