"""Conformance of the shared option-letter extractor (ScienceQA, MMLU-Pro) with MMLU-Pro's own
answer extraction, and of MMMU's path with MMMU's `parse_multi_choice_response`.

MMLU-Pro's `evaluate_from_local.py` (TIGER-Lab/MMLU-Pro) reads a letter in three steps:
`re.search(r"answer is \\(?([A-J])\\)?")` (the first such statement), else
`re.search(r".*[aA]nswer:\\s*([A-J])")` (the last "answer:" of the first line that has one),
else the last capital A-J standing alone anywhere (`\\b[A-J]\\b(?!.*\\b[A-J]\\b)`, DOTALL), else
nothing. `official_mmlu_pro` below is that code; each expected letter was worked out by hand
from those three steps, and the test checks that the port agrees with the hand values, so a
case marked as a deliberate difference really is one.

Deliberate differences (each case that shows one names it):
- REVISED: a revised answer counts by its last statement, not its first.
- OPTION_TEXT: an answer that gives an option's text (no letter) names that option.
- NUMBERED: "option 3" / "the third option" name the third option.
- LOWER: a lower-case letter counts when bracketed or when it ends a statement ("answer: c").
- PAST: a letter past the last option never counts (nor the pronoun "I" with fewer options).
- ARTICLE: the article "A" opening a phrase ("A cow.") is not option A.
"""

from __future__ import annotations

import re

import pytest

from lite_cpt.tasks.letters import choice_letter
from lite_cpt.tasks.mmmu_scoring import mmmu_choice


def official_mmlu_pro(text: str) -> str | None:
    """MMLU-Pro's extract_answer -> extract_again -> extract_final, as published."""
    match = re.search(r"answer is \(?([A-J])\)?", text)
    if match:
        return match.group(1)
    match = re.search(r".*[aA]nswer:\s*([A-J])", text)
    if match:
        return match.group(1)
    match = re.search(r"\b[A-J]\b(?!.*\b[A-J]\b)", text, re.DOTALL)
    return match.group(0) if match else None


ANIMALS = ["leopard", "cow", "goat", "horse"]
COLORS = ["red", "blue", "navy blue", "green"]
PAIRS = ["The magnitude of the magnetic force is smaller in Pair 1.",
         "The magnitude of the magnetic force is smaller in Pair 2.",
         "The magnitude of the magnetic force is the same in both pairs."]  # a ScienceQA question's options
PRICES = ["$5", "$10", "$15", "$20", "$25", "$30", "$35", "$40", "$45", "$50"]  # MMLU-Pro: ten options

# (response, options, letter lite-cpt reads, the deliberate difference from MMLU-Pro or None)
CASES = [
    ("The answer is (B).", ANIMALS, "B", None),
    ("The answer is B.", ANIMALS, "B", None),
    ("Answer: C", ANIMALS, "C", None),
    ("B", ANIMALS, "B", None),
    ("(D)", ANIMALS, "D", None),
    ("D.", ANIMALS, "D", None),
    ("Let's think step by step. The leopard has sharp teeth. The answer is (A).", ANIMALS, "A", None),
    ("A... wait, actually the answer is C", ANIMALS, "C", None),
    ("I think it's B. No wait, it's D.", ANIMALS, "D", None),
    ("The cow, since it chews grass. (B)", ANIMALS, "B", None),
    ("Not the leopard; the answer is (B) cow.", ANIMALS, "B", None),
    ("Blue is close, but (C) navy blue matches better.", COLORS, "C", None),
    ("Not the cow; (C).", ANIMALS, "C", None),  # the bracketed letter over the option text it names
    ("The horse is bigger, but I pick C.", ANIMALS, "C", None),  # the final letter over option text
    ("The answer is a bird.", COLORS, None, None),
    ("\\boxed{C}", ANIMALS, "C", None),
    ("**Answer:** D", ANIMALS, "D", None),
    ("The answer is (J).", PRICES, "J", None),
    ("Answer: J", PRICES, "J", None),
    ("B. cow", ANIMALS, "B", None),
    ("(A) leopard", ANIMALS, "A", None),
    ("C: goat", ANIMALS, "C", None),
    ("A leopard.", ANIMALS, "A", None),  # MMLU-Pro: the standalone "A"; here: the option's text
    ("Both A and C are wrong, so B.", ANIMALS, "B", None),
    ("Between C and D, the picture shows D.", ANIMALS, "D", None),
    ("The answer is (B), not (A).", ANIMALS, "B", None),
    ("Answer: B\n\nExplanation: Option A is wrong because leopards eat meat.", ANIMALS, "B", None),
    ("The final answer is C.", ANIMALS, "C", None),
    ("Final Answer: (B)", ANIMALS, "B", None),
    ("I choose option (C).", ANIMALS, "C", None),
    ("It is smaller in Pair 2, so the answer is B.", PAIRS, "B", None),
    ("Neither leopard nor cow; I'd say D", ANIMALS, "D", None),
    ("A", PRICES, "A", None),
    ("answer is (C) or (D)", ANIMALS, "C", None),
    ("Correction: the answer is D, not B.", ANIMALS, "D", None),
    ("Option B is wrong. Option D is right.", ANIMALS, "D", None),
    ("The answer is \\boxed{(B)}", ANIMALS, "B", None),
    ("The answer is: C", ANIMALS, "C", None),
    ("It can't be A or B, so C.", ANIMALS, "C", None),
    ("Goats eat grass, and the answer is (C) goat.", ANIMALS, "C", None),
    ("The answer is (E) $25.", PRICES, "E", None),
    ("After computing the interest, the answer is I.", PRICES, "I", None),
    ("The answer is (A). Wait, actually the answer is (C).", ANIMALS, "C", "REVISED"),
    ("My answer: B. On second thought, C.", ANIMALS, "C", "REVISED"),
    ("The answer is (A) because leopards are carnivores. Actually, let me reconsider: a cow has flat "
     "teeth, so (B).", ANIMALS, "B", "REVISED"),
    ("Answer: A\nAnswer: C", ANIMALS, "C", "REVISED"),
    ("The answer is B. Scratch that, the answer is D.", ANIMALS, "D", "REVISED"),
    ("cow", ANIMALS, "B", "OPTION_TEXT"),
    ("navy blue", COLORS, "C", "OPTION_TEXT"),
    ("It is navy blue.", COLORS, "C", "OPTION_TEXT"),
    ("The magnitude of the magnetic force is smaller in Pair 2.", PAIRS, "B", "OPTION_TEXT"),
    ("$25", PRICES, "E", "OPTION_TEXT"),
    ("Option 3", ANIMALS, "C", "NUMBERED"),
    ("The correct choice is option 2.", ANIMALS, "B", "NUMBERED"),
    ("There are 3 goats, so option 3.", ANIMALS, "C", "NUMBERED"),
    ("I'd go with the third option.", ANIMALS, "C", "NUMBERED"),  # MMLU-Pro reads the pronoun: "I"
    ("answer: c", ANIMALS, "C", "LOWER"),
    ("the answer is b", ANIMALS, "B", "LOWER"),
    ("(b)", ANIMALS, "B", "LOWER"),
    ("I am not sure.", ANIMALS, None, "PAST"),  # MMLU-Pro: "I"
    ("E", ANIMALS, None, "PAST"),
    ("The answer is (G).", ANIMALS, None, "PAST"),
    ("A cow.", ANIMALS, "B", "ARTICLE"),
]

# what MMLU-Pro's extraction gives where a case differs (worked out by hand from its three steps)
OFFICIAL_WHERE_DIFFERENT = {
    "The answer is (A). Wait, actually the answer is (C).": "A",
    "My answer: B. On second thought, C.": "B",
    "The answer is (A) because leopards are carnivores. Actually, let me reconsider: a cow has flat "
    "teeth, so (B).": "A",
    "Answer: A\nAnswer: C": "A",
    "The answer is B. Scratch that, the answer is D.": "B",
    "cow": None, "navy blue": None, "It is navy blue.": None,
    "The magnitude of the magnetic force is smaller in Pair 2.": None, "$25": None,
    "Option 3": None, "The correct choice is option 2.": None, "There are 3 goats, so option 3.": None,
    "I'd go with the third option.": "I",
    "answer: c": None, "the answer is b": None, "(b)": None,
    "I am not sure.": "I", "E": "E", "The answer is (G).": "G",
    "A cow.": "A",
}


def test_the_table_is_large_and_every_difference_is_named():
    assert len(CASES) >= 50
    assert len({response for response, *_ in CASES}) == len(CASES)
    named = {response for response, _, _, difference in CASES if difference}
    assert named == set(OFFICIAL_WHERE_DIFFERENT)


@pytest.mark.parametrize("response, options, letter, difference", CASES)
def test_choice_letter_conforms_to_mmlu_pro_except_where_named(response, options, letter, difference):
    assert choice_letter(response, options) == letter
    official = official_mmlu_pro(response)
    if difference is None:
        assert official == letter  # the hand value is also the published extractor's
    else:
        assert official == OFFICIAL_WHERE_DIFFERENT[response] != letter


# ---------------------------------------------------------------------------------------------
# MMMU: lite-cpt's MMMU path is MMMU's `parse_multi_choice_response` (mmmu/utils/eval_utils.py)

MMMU_OPTIONS = ["Baroque", "Gothic", "Romanesque", "Modern"]


@pytest.mark.parametrize("response, letter", [
    ("(B)", "B"),
    ("B", "B"),
    ("The answer is (C).", "C"),
    ("Answer: D.", "D"),  # the "." is stripped, then " D " stands alone
    ("(A) is tempting but (C) is right", "C"),  # several bracketed: the last
    ("A or C? I pick C here", "C"),  # several standalone: the last
    ("This cathedral, with its pointed arches, is clearly Gothic architecture", "B"),  # text, > 5 words
    ("It is in the Gothic style, not Baroque at all", "A"),  # several texts: the last one found
    ("I think it is Modern, not B.:", "D"),  # "B.:" keeps its "." (each mark stripped in turn), so text
])
def test_mmmu_choice_is_mmmus_parse_multi_choice_response(response, letter):
    assert mmmu_choice(response, MMMU_OPTIONS, "validation_Art_1") == letter
