"""The option letter a free-text answer names: one extractor for every multiple-choice task.

Models answer a multiple-choice question in many ways: `B`, `(b)`, `B. blue`, `Answer: C`,
`The answer is (B).`, `Option B`, `\\boxed{C}`, `**Answer:** D`, the option's own text, or a
chain of thought that mentions several letters before settling on one. (A chain-of-thought
answer's `<answer>` tag is taken off before, by the task's `extract_answer`, in CoT mode only.) `choice_letter` tries,
in order, the readings that are least ambiguous and keeps only letters of existing options:

1. the whole answer is one letter, bracketed or not (`b`, `(B)`, `B.`);
2. a revised answer: after the last revision marker ("wait", "actually", "on second thought",
   "correction", "I mean", "scratch that", "let me reconsider"), an explicit letter there
   (readings 1, 3, 4, 7, 8) wins: "A... wait, actually the answer is C" is C;
3. the last explicit statement: `answer is (B)`, `Answer: C`, else the last `option B`,
   `choice is D` (an explanation after "Answer: B" may name options it rules out);
4. a letter that opens the answer as a label: `B. blue`, `(B) blue`, `B) blue`, `B: blue`;
5. the whole answer is exactly one option's text;
6. a numbered option, counted from 1: `option 3`, `choice #2`, `the second option` (a model
   that numbers the lettered options);
7. the last bracketed letter: `(B)`, `B)`, `[B]`;
8. a capital letter that ends the answer (`... so I pick D.`), unless the answer ends with an
   option's own text ("Vitamin C" among the options);
9. the text of exactly one option contained in the answer (a longer option wins over one it
   contains: "navy blue" over "blue").

So an explicit letter (readings 1-4, 7, 8) wins over option text (9): "Not blue; (C)" is C.
"""

from __future__ import annotations

import re

from lite_cpt.data.sample import LETTERS

_BOXED = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*([^{}]*?)\s*\}?\s*\}")
_ALONE = re.compile(r"^\W*([A-Ja-j])\W*$")
_STATED_LETTER = r"(?:\(([A-J])\)|\[([A-J])\]|(?-i:\b([A-J])\b)|(?-i:\b([a-j]))(?=\W*$))"
# "the answer is (B)", "Answer: C", "answer would be option D": what the answer says it is
_ANSWER_STATED = re.compile(
    r"answer\s*(?:is|would be|should be|will be)?\s*(?:option|choice)?\s*[:\-]?\s*" + _STATED_LETTER, re.IGNORECASE
)
# "option B", "choice is D": weaker, since an explanation names options it rules out
_OPTION_STATED = re.compile(
    r"(?:option|choice)\s*(?:is|would be|should be|will be)?\s*[:\-]?\s*" + _STATED_LETTER, re.IGNORECASE
)
_LABEL = re.compile(r"^\s*[\(\[]?([A-J])(?:[\)\]]|[.:,](?=\s|$))")
_BRACKETED = re.compile(r"(?:\(([A-J])\)|\[([A-J])\]|\b([A-J])\))")
_TRAILING = re.compile(r"\b([A-J])\W*$")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_REVISION = re.compile(
    r"\b(?:wait|actually|on second thought|on reflection|correction|i mean|scratch that|let me reconsider)\b",
    re.IGNORECASE,
)
_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
_NUMBERED = re.compile(
    r"\b(?:option|choice)\s*(?:number|no\.|#)?\s*\(?(\d{1,2})\b\)?"
    rf"|\b({'|'.join(_ORDINALS)})\s+(?:option|choice)\b",
    re.IGNORECASE,
)


def _norm(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _answer_text(text: str) -> str:
    boxed = _BOXED.findall(text)
    text = boxed[-1] if boxed else text
    return text.replace("**", "").replace("__", "").strip()


def _by_option_text(text: str, choices: list[str], whole: bool = False) -> str | None:
    """The option whose text the answer is (`whole`), else the only one it contains."""
    said = _norm(text)
    if not said:
        return None
    names = [_norm(c) for c in choices]
    equal = [i for i, name in enumerate(names) if name and name == said]
    if len(equal) == 1:
        return LETTERS[equal[0]]
    if whole:
        return None
    contained = [i for i, name in enumerate(names) if name and re.search(rf"\b{re.escape(name)}\b", said)]
    # an option contained in another (e.g. "blue" in "navy blue") leaves only the longer one
    contained = [i for i in contained if not any(j != i and names[i] in names[j] for j in contained)]
    return LETTERS[contained[0]] if len(contained) == 1 else None


def _last_valid(found: list[str], valid: str) -> str | None:
    letters = [f.upper() for f in found if f and f.upper() in valid]
    return letters[-1] if letters else None


def _stated_letter(body: str, valid: str) -> str | None:
    """Readings 1, 3 and 4: the answer is a letter, states one, or opens with one as a label."""
    alone = _ALONE.match(body)
    if alone and alone.group(1).upper() in valid:
        return alone.group(1).upper()
    for pattern in (_ANSWER_STATED, _OPTION_STATED):
        stated = _last_valid(["".join(m) for m in pattern.findall(body)], valid)
        if stated:
            return stated
    label = _LABEL.match(body)
    return label.group(1) if label and label.group(1) in valid else None


def _marked_letter(body: str, valid: str, choices: list[str] | None) -> str | None:
    """Readings 7 and 8: the last bracketed letter, else a capital letter that ends the answer."""
    bracketed = _last_valid(["".join(m) for m in _BRACKETED.findall(body)], valid)
    return bracketed or _trailing(body, valid, choices)


def _trailing(body: str, valid: str, choices: list[str] | None) -> str | None:
    """A capital letter that ends the answer, unless the answer ends with an option's text."""
    found = _TRAILING.search(body)
    if not found or found.group(1) not in valid or (choices and _ends_with_option(body, choices)):
        return None
    return found.group(1)


def _numbered(body: str, n: int) -> str | None:
    """The last numbered option (`option 3` is C, `the second option` is B), 1-based."""
    picks = []
    for number, ordinal in _NUMBERED.findall(body):
        index = int(number) if number else _ORDINALS.index(ordinal.lower()) + 1
        if 1 <= index <= n:
            picks.append(LETTERS[index - 1])
    return picks[-1] if picks else None


def _ends_with_option(body: str, choices: list[str]) -> bool:
    said = _norm(body)
    return any(name and (said == name or said.endswith(" " + name)) for name in map(_norm, choices))


def choice_letter(text: str, choices: list[str] | None = None, n_options: int | None = None) -> str | None:
    """The option letter an answer names (see the module docstring), or None. Letters beyond
    the options (`n_options`, else `len(choices)`, else ten) never count."""
    n = n_options or (len(choices) if choices else len(LETTERS))
    valid = LETTERS[:n]
    body = _answer_text(text)
    revisions = list(_REVISION.finditer(body))
    if revisions:
        tail = body[revisions[-1].end():].lstrip(" ,;:.-!")
        revised = _stated_letter(tail, valid) or _marked_letter(tail, valid, choices)
        if revised:
            return revised
    stated = _stated_letter(body, valid)
    if stated:
        return stated
    if choices:
        equal = _by_option_text(body, choices, whole=True)
        if equal:
            return equal
    numbered = _numbered(body, n)
    if numbered:
        return numbered
    marked = _marked_letter(body, valid, choices)
    return marked or (_by_option_text(body, choices) if choices else None)
