"""Answers that are numbers or expressions: Geometry3K (checked for mathematical equivalence)
and CLEVR counting (numeric match)."""

from __future__ import annotations

import cmath
import re
from typing import Any

import sympy
from sympy.parsing.sympy_parser import (
    convert_xor,
    implicit_multiplication,
    parse_expr,
    standard_transformations,
)

from lite_cpt.tasks.base import Sample, extract_answer, numeric_match, register_task
from lite_cpt.tasks.choice import LETTERS, choice_question, predicted_letter
from lite_cpt.tasks.real import RealTask
from lite_cpt.tasks.vqa import normalize_vqa_answer

# ---------------------------------------------------------------------------------------------
# LaTeX / plain-text math -> sympy

_TRANSFORMS = standard_transformations + (implicit_multiplication, convert_xor)
_SAFE = re.compile(r"^(?:[\d\s.+\-*/()^]|sqrt|pi)*$")  # all parse_expr ever sees: no names, no calls
_DROP = tuple(r"\left \right \! \, \; \: \displaystyle $ ^\circ ^{\circ} ° \degree \% %".split())
_WRAPPERS = ("\\text", "\\mathrm", "\\mbox", "\\operatorname")
_UNITS = re.compile(
    r"\b(?:degrees?|units?|square|sq|cm|mm|km|m|in|inches|ft|feet|yards?|meters?)\b\.?\s*(?:\^?2)?",
    re.IGNORECASE,
)
_PLAIN_DECIMAL = re.compile(r"^\s*-?\d*\.(\d+)\s*$")


def _argument(text: str, i: int) -> tuple[str, int]:
    """The argument of a LaTeX command at text[i]: a {...} group (nested) or one character."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return "", i
    if text[i] != "{":
        return text[i], i + 1
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j], j + 1
    return text[i + 1 :], len(text)


def latex_to_python(text: str) -> str:
    """Rewrite LaTeX math into the arithmetic sympy parses: \\frac{a}{b} -> ((a)/(b)),
    \\sqrt{a} -> sqrt(a), \\sqrt[n]{a} -> ((a)**(1/(n))), \\pi/π -> pi, \\cdot/\\times -> *,
    braces -> parentheses; degree signs, units, \\text{...} and $ are dropped."""
    out, i = [], 0
    while i < len(text):
        if text.startswith(("\\frac", "\\dfrac", "\\tfrac"), i):
            i = text.index("frac", i) + 4
            num, i = _argument(text, i)
            den, i = _argument(text, i)
            out.append(f"(({latex_to_python(num)})/({latex_to_python(den)}))")
        elif text.startswith("\\sqrt", i):
            i += 5
            if i < len(text) and text[i] == "[":
                close = text.index("]", i)
                degree = text[i + 1 : close]
                radicand, i = _argument(text, close + 1)
                out.append(f"(({latex_to_python(radicand)})**(1/({latex_to_python(degree)})))")
            else:
                radicand, i = _argument(text, i)
                out.append(f"sqrt({latex_to_python(radicand)})")
        elif text.startswith(_WRAPPERS, i):
            _, i = _argument(text, text.index("{", i) if "{" in text[i:] else len(text))  # units: drop
        elif text[i] == "\\":
            name = re.match(r"\\([A-Za-z]+)", text[i:])
            command = name.group(1) if name else ""
            out.append({"pi": " pi ", "cdot": "*", "times": "*", "div": "/"}.get(command, " "))
            i += 1 + len(command) if command else 2
        else:
            out.append({"{": "(", "}": ")", "π": " pi ", "×": "*", "÷": "/"}.get(text[i], text[i]))
            i += 1
    return "".join(out)


def math_text(text: str) -> str:
    """The arithmetic part of an answer like `3\\sqrt{3}`, `x = 12`, `52°`, `2.5 cm`, `\\boxed{7}`,
    rewritten by `latex_to_python`."""
    boxed = re.search(r"\\boxed\{", text)
    if boxed:
        text, _ = _argument(text, boxed.end() - 1)
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    for token in _DROP:
        text = text.replace(token, " ")
    text = re.sub(r"(\d),(\d{3})\b", r"\1\2", text)  # thousands separators
    return _UNITS.sub(" ", latex_to_python(text)).strip().rstrip(".").strip()


def parse_math(text: str) -> sympy.Expr | None:
    """The number an answer states, as an (unevaluated) sympy expression; None when it is not
    plain arithmetic. Only digits, operators, sqrt and pi reach the parser, and powers are
    bounded (|exponent| <= 100), so a prediction can neither run code nor stall the reward."""
    text = math_text(text)
    if not text or len(text) > 200 or not _SAFE.match(text):
        return None
    try:
        value = parse_expr(
            text, local_dict={"pi": sympy.pi, "sqrt": sympy.sqrt}, transformations=_TRANSFORMS, evaluate=False
        )
        if not isinstance(value, sympy.Expr) or not value.is_number:
            return None
        for power in sorted(value.atoms(sympy.Pow), key=lambda p: len(str(p))):  # inner ones first
            if abs(float(power.exp.evalf())) > 100:
                return None
    except Exception:  # noqa: BLE001 - malformed arithmetic just means "no answer"
        return None
    return value


def _stated_precision(text: str) -> float:
    """Half a unit in the last place of a plain decimal (`5.20` -> 0.005), else 0."""
    found = _PLAIN_DECIMAL.match(math_text(text))
    return 0.5 * 10 ** -len(found.group(1)) if found else 0.0


def math_equivalent(prediction: str, answer: str) -> bool:
    """True when both parse and are the same number: equal up to 1e-6 relative, or equal once
    the exact one is rounded to the decimals the other states (`5.196` and `5.2` both match
    3\\sqrt{3} = 5.19615...; `5.19` and `5` do not)."""
    pred, gold = parse_math(prediction), parse_math(answer)
    if pred is None or gold is None:
        return False
    try:
        p, g = complex(pred.evalf()), complex(gold.evalf())
    except (TypeError, ValueError):  # undefined, e.g. 1/0
        return False
    if p.imag or g.imag or cmath.isnan(p) or cmath.isnan(g):
        return False
    p, g = p.real, g.real
    if abs(p - g) <= 1e-6 * max(1.0, abs(g)):
        return True
    tolerance = max(_stated_precision(prediction), _stated_precision(answer))
    return tolerance > 0 and abs(p - g) <= tolerance + 1e-12


# ---------------------------------------------------------------------------------------------
# Task types


@register_task("geometry3k")
class Geometry3KTask(RealTask):
    """hiyouga/geometry3k: images (list) or image, problem (with an `<image>` tag), answer
    (`3\\sqrt{3}`, `52`, ...). Rows that also carry `choices` are multiple choice: the letter,
    or a value equivalent to the right option, scores."""

    default_path = "geometry3k"
    default_hf_id = "hiyouga/geometry3k"
    image_column = "images"
    answer_instruction = "Answer with a number or a simplified expression."

    def row_images(self, table, rows: list[dict]) -> list[Any]:
        return [row.get("images") if row.get("images") is not None else row.get("image") for row in rows]

    def to_sample(self, row: dict, sample_id: str, image: Any) -> Sample:
        question = str(row.get("problem") or row.get("question")).replace("<image>", "").strip()
        answer = str(row["answer"]).strip()
        choices = [str(c) for c in row.get("choices") or []]
        if not choices:
            return Sample(id=sample_id, question=question, answer=answer, image=image, answers=[answer])
        if answer in LETTERS[: len(choices)]:
            letter = answer
        else:
            letter = next((LETTERS[i] for i, c in enumerate(choices) if math_equivalent(c, answer)), answer)
        value = choices[LETTERS.index(letter)] if letter in LETTERS[: len(choices)] else answer
        return Sample(
            id=sample_id,
            question=choice_question(question, choices),
            answer=letter,
            image=image,
            choices=choices,
            meta={"value": value},
        )

    def instruction(self, sample: Sample) -> str:
        return (
            "Answer with the option's letter from the given choices."
            if sample.choices
            else self.answer_instruction
        )

    def reward(self, prediction: str, sample: Sample) -> float:
        if sample.choices:
            if predicted_letter(prediction, sample.choices) == sample.answer:
                return 1.0
            return 1.0 if math_equivalent(prediction, sample.meta.get("value", "")) else 0.0
        return 1.0 if math_equivalent(prediction, sample.answer) else 0.0


@register_task("clevr")
class ClevrTask(RealTask):
    """CLEVR counting, e.g. leonardPKU/clevr_cogen_a_train: image, problem, solution
    (`<answer> 3 </answer>`); also plain `question`/`answer` columns."""

    default_path = "clevr"
    default_hf_id = "leonardPKU/clevr_cogen_a_train"
    answer_instruction = "Answer with a number."

    def to_sample(self, row: dict, sample_id: str, image: Any) -> Sample:
        solution = str(row.get("solution") if row.get("solution") is not None else row.get("answer"))
        think = re.search(r"<think>(.*?)</think>", solution, re.DOTALL)
        answer = extract_answer(solution)
        return Sample(
            id=sample_id,
            question=str(row.get("problem") or row.get("question")).strip(),
            answer=answer,
            image=image,
            answers=[answer],
            meta={"rationale": think.group(1).strip() if think else ""},
        )

    def reward(self, prediction: str, sample: Sample) -> float:
        """Numeric match after number words become digits ('three' -> 3)."""
        return numeric_match(normalize_vqa_answer(prediction), sample.answer, rel_tol=1e-6)
