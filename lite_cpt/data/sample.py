"""The record every task and loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lite_cpt.data.images import ImageRef

LETTERS = "ABCDEFGHIJ"


@dataclass
class Sample:
    """One question. `answer` is the SFT target; `answers` holds every accepted answer
    (e.g. the ten human answers of a VQA question); `choices` are multiple-choice options.
    `images` are references (see lite_cpt.data.images), in the order the prompt shows them;
    they are decoded when a batch is encoded."""

    id: str
    question: str
    answer: str
    images: tuple[ImageRef, ...] = ()
    answers: list[str] | None = None
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def format_choices(choices: list[str]) -> str:
    """Options as `(A) first` lines, the way multiple-choice prompts list them."""
    return "\n".join(f"({LETTERS[i]}) {choice}" for i, choice in enumerate(choices))
