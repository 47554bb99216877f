"""Answers that are numbers or expressions: Geometry3K (graded by mathematical equivalence with
EasyR1's grader, `mathruler`, as the paper's reward does) and CLEVR counting (numeric match)."""

from __future__ import annotations

from mathruler.grader import extract_boxed_content, grade_answer

from lite_cpt.data.images import ImageRef
from lite_cpt.data.quality import cell_text
from lite_cpt.data.sample import LETTERS
from lite_cpt.data.spec import DatasetSpec, hub_download
from lite_cpt.tasks.base import TASK_TYPES, Sample, numeric_match, solution_parts
from lite_cpt.tasks.choice import CHOICE_INSTRUCTION, choice_question
from lite_cpt.tasks.letters import choice_letter
from lite_cpt.tasks.real import RealTask
from lite_cpt.tasks.vqa import normalize_vqa_answer


def math_answer(text: str) -> str:
    """The answer part of a math response: the last `\\boxed{...}` when there is one."""
    boxed = extract_boxed_content(text) if "\\boxed" in text else "None"
    return text.strip() if boxed == "None" else boxed


def math_equivalent(prediction: str, answer: str) -> bool:
    """EasyR1's accuracy reward: `mathruler.grader.grade_answer` on the (boxed) answer, which
    normalises LaTeX and compares with sympy (`\\frac{1}{2}` = `0.5`, `48^\\circ` = `48`)."""
    try:
        return bool(grade_answer(math_answer(prediction), answer))
    except Exception:  # noqa: BLE001 - a malformed expression is simply not the answer
        return False


@TASK_TYPES.register
class Geometry3KTask(RealTask):
    """hiyouga/geometry3k: images (a list with the diagram), problem (with an `<image>` tag),
    answer (`3\\sqrt{3}`, `52`, ...), choices (four candidate values).

    Free-form by default, as the paper trained it with EasyR1: the answer is graded for
    mathematical equivalence with `answer`. With `multiple_choice: true` in the recipe's task,
    the choices are shown and the letter of the right one (or its value) scores."""

    type_name = "geometry3k"

    dataset = DatasetSpec(
        path="geometry3k", hf_id="hiyouga/geometry3k", train_split="train", test_split="test",
        download=hub_download("hiyouga/geometry3k"),
    )
    image_columns = ("images",)
    answer_instruction = "Answer with a number or a simplified expression."

    @property
    def multiple_choice(self) -> bool:
        return bool(getattr(self.config, "multiple_choice", False))

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        question = cell_text(row.get("problem") or row.get("question")).replace("<image>", "").strip()
        answer = cell_text(row.get("answer"))
        choices = [str(c) for c in row.get("choices") or []]
        if not (self.multiple_choice and choices):
            return Sample(id=sample_id, question=question, answer=answer, images=images, answers=[answer],
                          meta={"choices": choices})
        if answer in LETTERS[: len(choices)]:
            letter = answer
        else:
            letter = next((LETTERS[i] for i, c in enumerate(choices) if math_equivalent(c, answer)), answer)
        value = choices[LETTERS.index(letter)] if letter in LETTERS[: len(choices)] else answer
        return Sample(id=sample_id, question=choice_question(question, choices), answer=letter, images=images,
                      choices=choices, meta={"value": value})

    def instruction(self, sample: Sample) -> str:
        return CHOICE_INSTRUCTION if sample.choices else self.answer_instruction

    def reward(self, prediction: str, sample: Sample) -> float:
        if sample.choices:
            if choice_letter(prediction, sample.choices) == sample.answer:
                return 1.0
            return 1.0 if math_equivalent(prediction, sample.meta.get("value", "")) else 0.0
        return 1.0 if math_equivalent(prediction, sample.answer) else 0.0


@TASK_TYPES.register
class ClevrTask(RealTask):
    """CLEVR counting, leonardPKU/clevr_cogen_a_train: image, problem, solution
    (`<answer> 3 </answer>`); one published split, which the recipe slices 80/20."""

    type_name = "clevr"

    dataset = DatasetSpec(
        path="clevr", hf_id="leonardPKU/clevr_cogen_a_train", train_split="train[:80%]",
        test_split="train[80%:]", download=hub_download("leonardPKU/clevr_cogen_a_train"),
    )
    answer_instruction = "Answer with a number."

    def to_sample(self, row: dict, sample_id: str, images: tuple[ImageRef, ...]) -> Sample:
        solution = cell_text(row.get("solution") if row.get("solution") is not None else row.get("answer"))
        rationale, answer = solution_parts(solution)
        return Sample(
            id=sample_id,
            question=cell_text(row.get("problem") or row.get("question")),
            answer=answer,
            images=images,
            answers=[answer],
            meta={"rationale": rationale},
        )

    def reward(self, prediction: str, sample: Sample) -> float:
        """Numeric match after number words become digits ('three' -> 3)."""
        return numeric_match(normalize_vqa_answer(prediction), sample.answer, rel_tol=1e-6)
