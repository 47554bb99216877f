"""Expected answer lengths: what the time plan assumes about how long a sampled answer runs.

An answer's length is long-tailed (most chains of thought are short, a few run to the cap), so
the plan holds a distribution per task, not the cap: a log-normal with the task's mean and
coefficient of variation, cut at the recipe's `max_new_tokens`. From it:

    mean_capped(cap)            E[min(L, cap)]                 tokens trained and scored per answer
    expected_longest(n, cap)    E[min(max(L_1..L_n), cap)]     decode steps of a static generate call
                                = ∫_0^cap 1 − F(x)^n dx        of n answers (it ends with its longest)
    truncated_fraction(cap)     P(L > cap)                     answers cut at the cap

A continuous-batching backend refills a finished answer's slot at once, so its decode steps
track the mean instead of the longest.

The figures come from a calibration rollout of the user's model on each task (`lite-cpt bench
gpu --recipe R`), else from DEFAULT_COT_LENGTHS below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from scipy import integrate, stats


@dataclass(frozen=True)
class AnswerLengths:
    """A task's answer-length distribution: mean tokens, coefficient of variation, and where the
    figures come from."""

    mean: float
    cv: float
    source: str

    def _dist(self):
        sigma = math.sqrt(math.log1p(self.cv**2))
        return stats.lognorm(s=sigma, scale=self.mean * math.exp(-sigma**2 / 2))

    def truncated_fraction(self, cap: int) -> float:
        return float(self._dist().sf(cap))

    def mean_capped(self, cap: int) -> float:
        return _capped_integral(self.mean, self.cv, cap, 1)

    def expected_longest(self, n: int, cap: int) -> float:
        return _capped_integral(self.mean, self.cv, cap, max(1, n))

    def describe(self, cap: int) -> str:
        return (f"mean {self.mean:.0f} tokens (cv {self.cv:.2f}), {100 * self.truncated_fraction(cap):.1f} % cut "
                f"at {cap}; {self.source}")


@lru_cache(maxsize=4096)
def _capped_integral(mean: float, cv: float, cap: int, n: int) -> float:
    """∫_0^cap 1 − F(x)^n dx for the log-normal of (mean, cv)."""
    dist = AnswerLengths(mean, cv, "")._dist()
    value, _ = integrate.quad(lambda x: 1.0 - float(dist.cdf(x)) ** n, 0.0, float(cap), limit=200)
    return min(float(cap), value)


#: Chains of thought of Qwen2.5-VL-7B-Instruct under the R1-V / EasyR1 prompt, per task type.
#: An assumption, not a measurement: no per-task response-length log of this model on these
#: tasks was found published. Short-answer VQA tasks (one word after a short reasoning) are put
#: at ~150 tokens, ScienceQA's option reasoning at ~200 and Geometry3K's derivations at ~400,
#: each long-tailed (cv 0.8: about 1 answer in 50 runs past 3x the mean). A calibration
#: (`lite-cpt bench gpu --recipe R`) replaces them with the user's model's own answers.
DEFAULT_SOURCE = "assumed default (calibrate with `lite-cpt bench gpu --recipe R`)"
DEFAULT_COT_LENGTHS = {
    "scienceqa": 200.0, "textvqa": 150.0, "vizwiz": 150.0, "gqa": 150.0, "geometry3k": 400.0,
    "pathvqa": 150.0, "clevr": 150.0, "mmmu": 300.0, "mmlu_pro": 300.0, "pope": 120.0,
}
DEFAULT_CV = 0.8


#: A short answer (an option letter, a word or a short phrase, a number), then the end of turn: a
#: few tokens, put at 16 to be safe. The decode steps of an evaluation call whose answers are
#: short (timeplan.SHORT_ANSWER_STEPS) and the SFT target of a built-in task type (the gold answer
#: itself, `Task.target`: ScienceQA's letter, TextVQA's/VizWiz's/GQA's/PathVQA's/CLEVR's words,
#: Geometry3K's number or expression). A calibration measures the data's own.
SHORT_ANSWER_TOKENS = 16
DEFAULT_TARGET_TOKENS = float(SHORT_ANSWER_TOKENS)
SHORT_TARGET_TYPES = frozenset({"scienceqa", "textvqa", "vizwiz", "gqa", "geometry3k", "pathvqa", "clevr"})


def default_target_tokens(task_type: str) -> float | None:
    """The expected SFT target length of a task type; None (the cap) for a type whose answers
    are not known to be short (a synthetic or custom task)."""
    return DEFAULT_TARGET_TOKENS if task_type in SHORT_TARGET_TYPES else None


def default_lengths(task_type: str) -> AnswerLengths | None:
    """The assumed distribution of a task type's answers; None for a type without one (a
    synthetic or custom task): the plan then takes every answer at the cap, as the tiny
    testbed's random model answers."""
    mean = DEFAULT_COT_LENGTHS.get(task_type)
    return None if mean is None else AnswerLengths(mean, DEFAULT_CV, DEFAULT_SOURCE)


def measured_lengths(lengths: list[int], source: str) -> AnswerLengths:
    """The distribution of answers a calibration rollout produced (cut at its cap: the tail
    beyond it is not seen, so the spread is a lower bound)."""
    mean = sum(lengths) / len(lengths)
    var = sum((n - mean) ** 2 for n in lengths) / max(1, len(lengths) - 1)
    return AnswerLengths(max(1.0, mean), max(0.05, math.sqrt(var) / max(1.0, mean)), source)


#: Typical pixels of one image of each dataset, before the processor's min/max pixel budget: what
#: the time plan expects a prompt to hold (the memory plan keeps the worst case, max_pixels).
#: CLEVR renders at 480×320 and POPE uses COCO's 640×480 (documented sizes); GQA's images are
#: Visual Genome's, mostly 500 px wide (500×375 taken); TextVQA ships Open Images scaled to a
#: 1,024-px long side (1024×768 taken); VizWiz's are phone photos (1296×968 taken); ScienceQA,
#: Geometry3K, PathVQA and MMMU vary and are assumptions (textbook figures and diagrams of a few
#: hundred pixels a side). A calibration on the user's data (`bench gpu --recipe R`) measures the
#: real mean prompt instead.
EXPECTED_IMAGE_PIXELS = {
    "clevr": 480 * 320, "pope": 640 * 480, "gqa": 500 * 375, "textvqa": 1024 * 768, "vizwiz": 1296 * 968,
    "scienceqa": 500 * 400, "geometry3k": 400 * 300, "pathvqa": 500 * 500, "mmmu": 800 * 600,
}


def expected_image_tokens(task_type: str, min_pixels: int | None, max_pixels: int | None,
                          pixels_per_token: int) -> float | None:
    """Image tokens of a typical image of the task type after the processor's pixel budget
    (None: no typical size known, or a text-only task)."""
    pixels = EXPECTED_IMAGE_PIXELS.get(task_type)
    if pixels is None:
        return None
    if min_pixels:
        pixels = max(pixels, min_pixels)
    if max_pixels:
        pixels = min(pixels, max_pixels)
    return pixels / pixels_per_token
