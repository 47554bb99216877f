"""MMMU's official answer parsing and grading (MMMU-Benchmark/MMMU, eval/utils/eval_utils.py),
restated so that lite-cpt's MMMU numbers are the benchmark's.

Multiple choice (`parse_multi_choice_response`): after stripping each of `,.!?;:'` from both
ends in turn, a bracketed letter `(B)` of an existing option,
else a letter standing alone between spaces, else (for answers longer than five words) an
option's text contained in the answer; several candidates -> the one that occurs last; none ->
a random option. The official script draws that option from `random` seeded with 42 once per
run, which makes a score depend on the order of the questions; here the draw is seeded with
(42, question id), so a question's score is a function of the question and the answer.

Open questions: the answer is cut into sentences; from each, the shortest tail after an
indicator ("could be", "so", "is", "thus", "therefore", "final", "answer", "result", and "="
in the last sentence) is a candidate; the numbers in the candidates are added; numbers are
rounded to 2 decimals, strings lower-cased (one-character strings padded with a space on one
side). The answer is right when a gold number equals a candidate number, or a gold string is
contained in a candidate string.
"""

from __future__ import annotations

import random
import re

_TRIM = (",", ".", "!", "?", ";", ":", "'")  # stripped one after another, in this order, as MMMU does
_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_NUMBER_PATTERNS = (
    re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b"),  # with thousands separators
    re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+"),  # scientific notation
    re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"),  # plain
)


def mmmu_choice(response: str, options: list[str], question_id: str) -> str:
    """The option letter MMMU reads from a response (never None: see the module docstring)."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    for char in _TRIM:  # one at a time: "B.:" keeps its "." (":" goes after "." was tried)
        response = response.strip(char)
    text = " " + response + " "
    by_letter = True
    bracketed = [c for c in letters if f"({c})" in text]
    candidates = bracketed or [c for c in letters if f" {c} " in text]
    if not candidates and len(text.split()) > 5:
        candidates = [c for c, option in zip(letters, options) if option.lower() in text.lower()]
        by_letter = False
    if not candidates:
        return random.Random(f"42/{question_id}").choice(letters)
    if len(candidates) == 1:
        return candidates[0]

    def position(letter: str) -> int:
        if not by_letter:
            return text.lower().rfind(options[letters.index(letter)].lower())
        return text.rfind(f"({letter})" if bracketed else f" {letter} ")

    return max(candidates, key=position)  # the last one; ties keep option order


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def normalize_open(text: str) -> list:
    """A number rounded to 2 decimals, or the lower-cased string (one character: padded)."""
    text = text.strip()
    if _is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


def _key_responses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    sentences = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for index, sentence in enumerate(sentences):
        indicators = _INDICATORS + (("=",) if index == len(sentences) - 1 else ())
        tails = [sentence.split(indicator)[-1].strip() for indicator in indicators if indicator in sentence]
        if tails:
            shortest = min(tails, key=len)
            if shortest not in (":", ",", ".", "!", "?", ";", "'"):
                keys.append(shortest)
    return keys or [response]


def parse_open(response: str) -> list:
    """Candidate answers of an open response: key tails, the numbers in them, normalised."""
    keys = _key_responses(response)
    found = list(keys)
    for key in keys:
        for pattern in _NUMBER_PATTERNS:
            found += pattern.findall(key)
    normalised = [value for item in found for value in normalize_open(item)]
    return list(dict.fromkeys(normalised))


def open_correct(golds: list[str], response: str) -> bool:
    """MMMU's open-question rule over every gold answer (see the module docstring)."""
    norm_golds = [value for gold in golds for value in normalize_open(gold)]
    for pred in parse_open(response):
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in norm_golds):
                return True
        elif pred in norm_golds:
            return True
    return False
