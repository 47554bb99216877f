"""Conformance of POPE's yes/no reading with POPE's own evaluation script (RUCAIBox/POPE
`evaluate.py`, the same as LLaVA's `eval_pope.py`):

    if text.find('.') != -1: text = text.split('.')[0]     # the first sentence only
    text = text.replace(',', '')
    words = text.split(' ')                                  # single spaces, not any whitespace
    answer = 'no' if 'No' in words or 'not' in words or 'no' in words else 'yes'

Each expected reading below was worked out by hand from those four lines: the words are
compared as written, so case and attached punctuation matter ("NO", "Not", "No!" are 'yes').

Deliberate difference (one): the task strips the answer's leading and trailing whitespace before
reading it (LLaVA writes `outputs.strip()` to its answer file, so the published pipeline does too);
`pope_yes_no` itself is the script, whitespace included.
"""

from __future__ import annotations

import pytest

from lite_cpt.tasks.base import Sample
from lite_cpt.tasks.vqa import POPETask, pope_f1, pope_yes_no

# (model answer, POPE's reading by hand)
CASES = [
    ("Yes", "yes"),
    ("No", "no"),
    ("no", "no"),
    ("yes", "yes"),
    ("NO", "yes"),  # case-sensitive: only 'No' and 'no'
    ("Yes.", "yes"),
    ("No.", "no"),
    ("no.", "no"),
    ("No, there is no dog in the image.", "no"),
    ("Yes, there is a dog in the image.", "yes"),
    ("There is no dog in the image.", "no"),
    ("There is not a dog.", "no"),
    ("Not", "yes"),  # 'Not' is not 'not'
    ("Not really.", "yes"),
    ("Not at all.", "yes"),
    ("I don't see a dog.", "yes"),  # "don't" is not 'not'
    ("I do not see a dog.", "no"),
    ("Yes. There is no cat.", "yes"),  # only the first sentence
    ("No. Yes.", "no"),
    ("No!", "yes"),  # 'No!' is one word
    ("No:", "yes"),
    ("no,", "no"),  # commas are deleted
    ("No, ", "no"),
    ("Nope.", "yes"),
    ("None.", "yes"),
    ("There is nothing.", "yes"),
    ("Yes, a dining table is visible.", "yes"),
    ("Sure", "yes"),
    ("The image does not contain a snowboard.", "no"),
    ("The image doesn't contain a snowboard.", "yes"),
    ("No\nThere is a cat.", "yes"),  # 'No\nThere' is one word: split on ' ' only
    ("No\nthere is no cat.", "no"),
    ("Yes, but not clearly.", "no"),
    ("There is a dog, not a cat.", "no"),
    ("It's not.", "no"),
    ("Absolutely no.", "no"),
    ("There are no people.", "no"),
    ("Approximately 1.5 meters, no bicycle.", "yes"),  # the first '.' ends the "sentence": "Approximately 1"
    ("No.There is a car", "no"),
    ("Yes there is a car in the image", "yes"),
    ("In the image, there is no car.", "no"),
    ("The answer is no.", "no"),
    ("The answer is yes.", "yes"),
    ("The answer is No", "no"),
    ("cannot tell", "yes"),
    ("I cannot determine that.", "yes"),
    ("Unanswerable", "yes"),
    ("", "yes"),
    ("no  dog", "no"),  # the empty word between two spaces changes nothing
    ("Yes, not", "no"),
    ("Is there a dog? No", "no"),
    ("Yes? No.", "no"),
    ("no-one is there", "yes"),
    ("nobody", "yes"),
    ("Definitely not.", "no"),
    ("yes, no", "no"),
    ("There is a snowboard. It is not red.", "yes"),
    ("There's no snowboard.", "no"),
    (" No", "no"),  # a leading space gives an empty first word
    ("No\n", "yes"),  # 'No\n' as written; the task strips it first (below)
]


def test_the_table_is_large_and_mixed():
    assert len(CASES) >= 50
    assert 15 <= sum(reading == "no" for _, reading in CASES) <= len(CASES) - 15


@pytest.mark.parametrize("answer, reading", CASES)
def test_pope_yes_no_is_popes_script(answer, reading):
    assert pope_yes_no(answer) == reading


def test_the_task_strips_whitespace_then_reads_as_pope():
    task = POPETask("pope")
    no = Sample(id="1", question="Is there a dog in the image?", answer="no")
    assert task.score("No\n", no) == 1.0  # stripped, as LLaVA writes its answers
    assert task.score("NO", no) == 0.0  # read as 'yes', as POPE's script does
    assert task.score("Not at all.", no) == 0.0


def test_pope_f1_counts_yes_as_positive_as_the_script_does():
    answers = ["Yes", "No", "NO", "There is no dog.", "Sure", "no"]
    gold = ["yes", "no", "no", "yes", "no", "no"]
    samples = [Sample(id=str(i), question="q", answer=g) for i, g in enumerate(gold)]
    # readings: yes, no, yes, no, yes, no -> TP=1 (0), FP=2 (2, 4), FN=1 (3), TN=2 (1, 5)
    report = pope_f1(answers, samples)
    assert report["precision"] == pytest.approx(1 / 3) and report["recall"] == pytest.approx(1 / 2)
    assert report["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert report["accuracy"] == pytest.approx(3 / 6) and report["yes_ratio"] == pytest.approx(3 / 6)
