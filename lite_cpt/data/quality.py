"""Unusable items: a sample whose image will not decode or is missing, whose question is empty
or whose answer is missing is skipped and counted, never trained or evaluated on.

`screen` splits loaded samples into usable ones and `BadItem`s (id and reason). The run screens
every split it loads (and logs what it skipped), `lite-cpt data check` reports the counts, and
the preflight fails a split whose unusable share exceeds `faults.max_bad_data_fraction`, so a
broken download stops the run before training rather than in the middle of a phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lite_cpt.data.images import ImageDecodeError, decode_image
from lite_cpt.data.sample import Sample

#: Key of `Sample.meta` that a loader sets when a row could not be read at all.
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class BadItem:
    id: str
    reason: str


def cell_text(value: Any) -> str:
    """A text cell as a string: '' for a null (None), so a missing answer stays missing and is
    skipped by `screen`, instead of becoming the answer "None"."""
    return "" if value is None else str(value).strip()


def item_problem(sample: Sample) -> str | None:
    """Why the sample cannot be used (None: it can). Decodes each of its images once."""
    if sample.meta.get(UNREADABLE):
        return str(sample.meta[UNREADABLE])
    if not (sample.question or "").strip():
        return "empty question"
    if not (sample.answer or "").strip() and not any(str(a).strip() for a in sample.answers or []):
        return "missing answer"
    for ref in sample.images:
        try:
            decode_image(ref, sample.id)
        except ImageDecodeError as error:
            return str(error)
    return None


def screen(samples: list[Sample]) -> tuple[list[Sample], list[BadItem]]:
    """(usable samples in their order, the unusable ones with their reasons)."""
    good, bad = [], []
    for sample in samples:
        problem = item_problem(sample)
        if problem is None:
            good.append(sample)
        else:
            bad.append(BadItem(sample.id, problem))
    return good, bad


def describe_bad(bad: list[BadItem], total: int, examples: int = 3) -> str:
    """'2 of 8 items unusable (a: empty question; b: image ... not found; ...)'."""
    shown = "; ".join(f"{item.id}: {item.reason}" for item in bad[:examples])
    more = f"; and {len(bad) - examples} more" if len(bad) > examples else ""
    return f"{len(bad)} of {total} items unusable ({shown}{more})"
