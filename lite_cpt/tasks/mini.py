"""Task types of the procedurally generated mini-seven benchmark (see lite_cpt.data.synthetic)."""

from __future__ import annotations

from lite_cpt.data import synthetic
from lite_cpt.tasks.base import BENCHMARK_TYPES, TASK_TYPES, Sample, Task, choice_letter, exact_match, numeric_match


class MiniTask(Task):
    """A synthetic task: samples come from its generator; the split name seeds them."""

    kind = ""
    image_size = 56

    def load(self, split: str, size: int | None) -> list[Sample]:
        return synthetic.generate(self.kind, split, size or 256, seed=self.seed, image_size=self.image_size)


class MultipleChoiceTask(MiniTask):
    answer_instruction = "Answer with the option's letter."

    def reward(self, prediction: str, sample: Sample) -> float:
        return 1.0 if choice_letter(prediction, sample.choices) == sample.answer else 0.0


class ShortAnswerTask(MiniTask):
    def reward(self, prediction: str, sample: Sample) -> float:
        return exact_match(prediction, sample.answers or [sample.answer])


class NumericTask(MiniTask):
    answer_instruction = "Answer with a number."

    def reward(self, prediction: str, sample: Sample) -> float:
        return numeric_match(prediction, sample.answer)


class YesNoTask(MiniTask):
    answer_instruction = "Answer yes or no."

    def reward(self, prediction: str, sample: Sample) -> float:
        return exact_match(prediction, [sample.answer])


_FAMILIES = {
    "mini_scienceqa": MultipleChoiceTask,
    "mini_textvqa": ShortAnswerTask,
    "mini_vizwiz": ShortAnswerTask,
    "mini_gqa": ShortAnswerTask,
    "mini_geometry": NumericTask,
    "mini_pathvqa": YesNoTask,
    "mini_clevr": NumericTask,
    "mini_pope": YesNoTask,
    "mini_mmmu": MultipleChoiceTask,
    "mini_mmlu": MultipleChoiceTask,
    "mini_arithmetic": NumericTask,
    "mini_wordgeometry": NumericTask,
    "mini_textchoice": MultipleChoiceTask,
}

for _kind, _family in _FAMILIES.items():
    _task = type(f"{''.join(p.title() for p in _kind.split('_'))}Task", (_family,), {"kind": _kind, "type_name": _kind})
    if _kind in synthetic.GENERAL:
        BENCHMARK_TYPES.register(_task)
    else:
        TASK_TYPES.register(_task)
