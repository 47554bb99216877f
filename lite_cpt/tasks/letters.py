"""The option letter a free-text answer names: one extractor for every multiple-choice task.

Models answer a multiple-choice question in many ways: `B`, `(b)`, `B. blue`, `Answer: C`,
`The answer is (B).`, `Option B`, `\\boxed{C}`, `**Answer:** D`, the option's own text, or a
chain of thought that mentions several letters before settling on one. (A chain-of-thought
answer's `<answer>` tag is taken off before, by the task's `extract_answer`, in CoT mode only.) `choice_letter` tries,
in order, the readings that are least ambiguous and keeps only letters of existing options:

1. the whole answer is one letter, bracketed or not (`b`, `(B)`, `B.`);
2. the last explicit statement: `answer is (B)`, `Answer: C`, `option B`, `choice is D`;
3. a letter that opens the answer as a label: `B. blue`, `(B) blue`, `B) blue`, `B: blue`;
4. the text of exactly one option (equal to the answer, else the only option it contains);
5. the last bracketed letter: `(B)`, `B)`;
6. a capital letter that ends the answer: `... so I pick D.`

A lower-case letter counts only when bracketed or when it ends the answer (`answer: c`), so the
article `a` ("the answer is a bird") never reads as an option; nor does the pronoun `I` in "I
think the answer is (B)", since only the stated letter is read.
"""

from __future__ import annotations

import re

from lite_cpt.data.sample import LETTERS

_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*([^{}]*?)\s*\}?\s*\}")
_ALONE = re.compile(r"^\W*([A-Ja-j])\W*$")
_STATED = re.compile(
    r"(?:answer|option|choice)\s*(?:is|would be|should be|will be)?\s*(?:option|choice)?\s*[:\-]?\s*"
    r"(?:\(([A-Ja-j])\)|\[([A-Ja-j])\]|(?-i:\b([A-J])\b)|(?-i:\b([a-j]))(?=\W*$))",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^\s*[\(\[]?([A-J])(?:[\)\]]|[.:,](?=\s|$))")
_BRACKETED = re.compile(r"(?:\(([A-J])\)|\b([A-J])\))")
_TRAILING = re.compile(r"\b([A-J])\W*$")
_NON_WORD = re.compile(r"[^a-z0-9]+")


def _norm(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _answer_text(text: str) -> str:
    boxed = _BOXED.findall(text)
    text = boxed[-1] if boxed else text
    return text.replace("**", "").replace("__", "").strip()


def _by_option_text(text: str, choices: list[str]) -> str | None:
    said = _norm(text)
    if not said:
        return None
    names = [_norm(c) for c in choices]
    equal = [i for i, name in enumerate(names) if name and name == said]
    if len(equal) == 1:
        return LETTERS[equal[0]]
    contained = [i for i, name in enumerate(names) if name and re.search(rf"\b{re.escape(name)}\b", said)]
    # an option contained in another (e.g. "blue" in "navy blue") leaves only the longer one
    contained = [i for i in contained if not any(j != i and names[i] in names[j] for j in contained)]
    return LETTERS[contained[0]] if len(contained) == 1 else None


def choice_letter(text: str, choices: list[str] | None = None, n_options: int | None = None) -> str | None:
    """The option letter an answer names (see the module docstring), or None. Letters beyond
    the options (`n_options`, else `len(choices)`, else ten) never count."""
    n = n_options or (len(choices) if choices else len(LETTERS))
    valid = LETTERS[:n]
    body = _answer_text(text)

    def first_valid(found: list[str]) -> str | None:
        letters = [f.upper() for f in found if f and f.upper() in valid]
        return letters[-1] if letters else None

    alone = _ALONE.match(body)
    if alone and alone.group(1).upper() in valid:
        return alone.group(1).upper()
    stated = first_valid(["".join(m) for m in _STATED.findall(body)])
    if stated:
        return stated
    label = _LABEL.match(body)
    if label and label.group(1) in valid:
        return label.group(1)
    if choices:
        named = _by_option_text(body, choices)
        if named:
            return named
    bracketed = first_valid(["".join(m) for m in _BRACKETED.findall(body)])
    if bracketed:
        return bracketed
    trailing = _TRAILING.search(body)
    return trailing.group(1) if trailing and trailing.group(1) in valid else None
