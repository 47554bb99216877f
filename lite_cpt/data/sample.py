"""The record every task and loader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class Sample:
    """One question. `answer` is the SFT target; `answers` holds every accepted answer
    (e.g. the ten human answers of a VQA question); `choices` are multiple-choice options."""

    id: str
    question: str
    answer: str
    image: Image.Image | None = None
    answers: list[str] | None = None
    choices: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def format_choices(choices: list[str]) -> str:
    """Options as `(A) first` lines, the way multiple-choice prompts list them."""
    return "\n".join(f"({'ABCDEFGHIJ'[i]}) {choice}" for i, choice in enumerate(choices))
