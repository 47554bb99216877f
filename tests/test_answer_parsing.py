"""Answer parsing against real-looking model outputs: the shared option-letter extractor, MMMU's
official rules, and POPE's per-category report."""

from __future__ import annotations

import pytest

from lite_cpt.tasks.base import Sample, extract_answer
from lite_cpt.tasks.letters import choice_letter
from lite_cpt.tasks.mmmu_scoring import mmmu_choice, open_correct, parse_open
from lite_cpt.tasks.vqa import pope_report

FOUR = ["red", "blue", "navy blue", "green"]
TEN = [f"option {i}" for i in range(10)]

# (answer as a model writes it, options, letter it names or None)
LETTER_CASES = [
    ("B", FOUR, "B"),
    ("b", FOUR, "B"),
    ("(B)", FOUR, "B"),
    ("(b)", FOUR, "B"),
    ("B.", FOUR, "B"),
    (" C ", FOUR, "C"),
    ("Answer: C", FOUR, "C"),
    ("answer: c", FOUR, "C"),
    ("Answer: (A) red", FOUR, "A"),
    ("The answer is (B).", FOUR, "B"),
    ("The answer is B, because the shirt is blue.", FOUR, "B"),
    ("The correct answer is D.", FOUR, "D"),
    ("The best answer is A", FOUR, "A"),
    ("Option B", FOUR, "B"),
    ("option b", FOUR, "B"),
    ("The answer is a bird.", TEN, None),  # the article is not option A
    ("I choose option (C).", FOUR, "C"),
    ("The correct choice is (D) green.", FOUR, "D"),
    ("B. blue", FOUR, "B"),
    ("B) blue", FOUR, "B"),
    ("(B) blue", FOUR, "B"),
    ("C: navy blue", FOUR, "C"),
    ("**Answer:** D", FOUR, "D"),
    ("\\boxed{C}", FOUR, "C"),
    ("Final answer: \\boxed{A}", FOUR, "A"),
    ("blue", FOUR, "B"),
    ("It is navy blue.", FOUR, "C"),  # the longer option wins over the one it contains
    ("Green", FOUR, "D"),
    ("I think the answer is (B)", TEN, "B"),  # ten options: the pronoun "I" is not option I
    ("I think it is J.", TEN, "J"),
    ("The answer is (J).", TEN, "J"),
    ("E", FOUR, None),  # a letter past the options never counts
    ("Answer: E", FOUR, None),
    ("I am not sure.", FOUR, None),
    ("The answer is a bird.", FOUR, None),
    ("<think>A looks right, but B fits the picture better.</think><answer>B</answer>", FOUR, "B"),
    ("<think>The magnet pairs differ in distance, so Pair 2 is weaker.</think>\n<answer>(C)</answer>", FOUR, "C"),
    ("Let's think step by step. Option A is wrong because the shirt is not red. "
     "Option C is darker than the shirt. So the answer is B.", FOUR, "B"),
    ("Looking at the map, West Virginia is the farthest north. Therefore, the answer is (A).", FOUR, "A"),
    ("First, A and B are ruled out by the hint. Between C and D, the picture shows D.", FOUR, "D"),
    ("A", TEN, "A"),
]


@pytest.mark.parametrize("answer,options,letter", LETTER_CASES)
def test_choice_letter_reads_real_looking_answers(answer, options, letter):
    # what a chain-of-thought score does: the <answer> tag's content (or the whole text), then the letter
    assert choice_letter(extract_answer(answer), options) == letter


def test_the_table_is_large_and_mixed():
    assert len(LETTER_CASES) >= 30
    assert sum("<answer>" in a for a, _, _ in LETTER_CASES) >= 2  # tagged chain of thought
    assert sum(len(a.split()) > 12 for a, _, _ in LETTER_CASES) >= 3  # untagged chain of thought


# ---------------------------------------------------------------------------------------------
# MMMU: the official parsing (eval/utils/eval_utils.py of MMMU-Benchmark/MMMU)

MMMU_OPTIONS = ["$63,020", "$58,410", "$77,490", "$71,320"]


@pytest.mark.parametrize(
    "response,letter",
    [
        ("C", "C"),
        ("(C)", "C"),
        ("The answer is (C).", "C"),
        ("Answer: C.", "C"),  # punctuation trimmed, then " C " stands alone
        ("(A) is tempting but (C) is right", "C"),  # several bracketed: the last one
        ("A or C? I pick C here", "C"),  # several standalone: the last one
        ("After adding the liabilities the missing amount comes to $77,490", "C"),  # option text, > 5 words
    ],
)
def test_mmmu_multiple_choice_follows_the_official_parse(response, letter):
    assert mmmu_choice(response, MMMU_OPTIONS, "validation_Accounting_1") == letter


def test_mmmu_unparseable_answers_get_a_draw_seeded_by_the_question():
    draws = {mmmu_choice("no idea", MMMU_OPTIONS, f"validation_Art_{i}") for i in range(40)}
    assert draws == {"A", "B", "C", "D"}  # a random option, as the official rule says
    assert mmmu_choice("no idea", MMMU_OPTIONS, "q7") == mmmu_choice("???", MMMU_OPTIONS, "q7")  # seeded
    assert mmmu_choice("$77,490", MMMU_OPTIONS, "q") in "ABCD"  # 1 word: no text match, so a draw


def test_mmmu_open_answers_follow_the_official_extraction_and_tolerance():
    assert open_correct(["1000"], "The total is 1,000 dollars.")
    assert open_correct(["3.14"], "so the answer is 3.14159")  # numbers compared at 2 decimals
    assert not open_correct(["3.15"], "so the answer is 3.14159")
    assert open_correct(["Monet"], "The painting is by Claude Monet.")  # gold string inside a candidate
    assert open_correct(["24/7", "3.429"], "Therefore the ratio is 3.4286")  # list of gold answers
    assert not open_correct(["42"], "I do not know.")
    assert 1870.0 in parse_open("It was completed around 1870.")
    assert parse_open("x = 5") == [5.0]  # the tail after "=" and the number in it, both 5.0


# ---------------------------------------------------------------------------------------------
# POPE: accuracy and F1 per category beside the pooled figures


def test_pope_reports_each_category_beside_the_pooled_figures():
    rows = [  # (category, gold, said)
        ("adversarial", "yes", "Yes."), ("adversarial", "no", "Yes, there is."),
        ("adversarial", "yes", "No."), ("adversarial", "no", "No."),
        ("popular", "yes", "yes"), ("popular", "no", "no"),
        ("random", "yes", "Yes"), ("random", "no", "There is no dog."), ("random", "no", "yes"),
    ]
    samples = [Sample(id=str(i), question="Is there a dog?", answer=g, meta={"category": c})
               for i, (c, g, _) in enumerate(rows)]
    report = pope_report([s for _, _, s in rows], samples)
    # adversarial: TP 1, FP 1, FN 1, TN 1 -> accuracy 0.5, P = R = 0.5, F1 0.5
    assert report["adversarial/accuracy"] == pytest.approx(0.5) and report["adversarial/f1"] == pytest.approx(0.5)
    assert report["popular/accuracy"] == 1.0 and report["popular/f1"] == 1.0
    # random: TP 1, FP 1, TN 1 -> accuracy 2/3, P 1/2, R 1, F1 2/3
    assert report["random/accuracy"] == pytest.approx(2 / 3) and report["random/f1"] == pytest.approx(2 / 3)
    # pooled: TP 3, FP 2, FN 1, TN 3 -> accuracy 6/9, P 3/5, R 3/4, F1 2/3
    assert report["pooled/accuracy"] == pytest.approx(6 / 9) and report["pooled/f1"] == pytest.approx(2 / 3)
