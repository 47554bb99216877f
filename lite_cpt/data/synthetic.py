"""The "mini seven": procedurally generated image tasks shaped like the paper's sequence.

Each generator draws one sample from a `random.Random`; a sample depends only on
(seed, task, split, index), so any split size gives the same first samples, and splits never
share a sample. The image is split into a 2x2 grid of quadrants because the tiny model's
vision tower merges 2x2 patches: each quadrant becomes one image token.

| task            | shaped like  | question                                     | answer            |
|-----------------|--------------|----------------------------------------------|-------------------|
| mini_scienceqa  | ScienceQA    | multiple choice about the colour of a shape  | option letter     |
| mini_textvqa    | TextVQA      | read a seven-segment digit                   | digit             |
| mini_vizwiz     | VizWiz       | colour of the object, or "unanswerable"      | colour / unans.   |
| mini_gqa        | GQA          | colour of the left / right shape             | colour            |
| mini_geometry   | Geometry3K   | area of a rectangle drawn on a unit grid     | number            |
| mini_pathvqa    | PathVQA      | yes/no about a texture                       | yes / no          |
| mini_clevr      | CLEVR        | count the objects                            | number            |

General benchmarks (evaluation only, never trained in the sequence): mini_pope (is there a
<colour> object? yes/no), mini_mmmu (multiple choice: which shape is drawn), mini_mmlu
(text-only multiple choice: which number is larger).
"""

from __future__ import annotations

import hashlib
import random
from typing import Callable

from PIL import Image, ImageDraw

from lite_cpt.data.sample import Sample, format_choices

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
}
COLOR_NAMES = list(COLORS)
BACKGROUND = (245, 245, 245)
SHAPES = ("square", "circle", "triangle")
# Seven-segment encoding: segments a..g lit for each digit.
SEGMENTS = {
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg",
    "5": "acdfg", "6": "acdefg", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


def sample_rng(seed: int, task: str, split: str, index: int) -> random.Random:
    key = f"{seed}/{task}/{split}/{index}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def _canvas(size: int, color=BACKGROUND) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (size, size), color)
    return image, ImageDraw.Draw(image)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], color) -> None:
    x0, y0, x1, y1 = box
    if shape == "square":
        draw.rectangle(box, fill=color)
    elif shape == "circle":
        draw.ellipse(box, fill=color)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=color)


def _quadrant_box(size: int, quadrant: int, margin: float = 0.15) -> tuple[float, float, float, float]:
    half = size / 2
    x, y = (quadrant % 2) * half, (quadrant // 2) * half
    pad = half * margin
    return (x + pad, y + pad, x + half - pad, y + half - pad)


def _big_shape(rng: random.Random, size: int, color: str, shape: str | None = None) -> Image.Image:
    image, draw = _canvas(size)
    pad = size * rng.uniform(0.08, 0.2)
    _draw_shape(draw, shape or rng.choice(SHAPES), (pad, pad, size - pad, size - pad), COLORS[color])
    return image


def _options(rng: random.Random, correct: str, pool: list[str], k: int = 4) -> tuple[list[str], str]:
    others = [c for c in pool if c != correct]
    choices = rng.sample(others, k - 1) + [correct]
    rng.shuffle(choices)
    return choices, "ABCD"[choices.index(correct)]


# ---------------------------------------------------------------------------------------------
# The seven tasks


def scienceqa(rng: random.Random, size: int) -> Sample:
    color = rng.choice(COLOR_NAMES)
    choices, letter = _options(rng, color, COLOR_NAMES)
    question = f"Which color is the shape in the picture?\n{format_choices(choices)}"
    return Sample(
        id="", question=question, answer=letter, images=(_big_shape(rng, size, color),), choices=choices,
        meta={"rationale": f"the shape is {color}"},
    )


def textvqa(rng: random.Random, size: int) -> Sample:
    digit = rng.choice(list(SEGMENTS))
    ink = COLORS[rng.choice(COLOR_NAMES)]
    image, draw = _canvas(size)
    m, w = size * 0.2, size * 0.1  # margin and stroke width
    left, right, top, mid, bottom = m, size - m, m * 0.6, size / 2, size - m * 0.6
    bars = {
        "a": (left, top, right, top + w), "g": (left, mid - w / 2, right, mid + w / 2),
        "d": (left, bottom - w, right, bottom), "f": (left, top, left + w, mid),
        "b": (right - w, top, right, mid), "e": (left, mid, left + w, bottom),
        "c": (right - w, mid, right, bottom),
    }
    for segment in SEGMENTS[digit]:
        draw.rectangle(bars[segment], fill=ink)
    return Sample(id="", question="What number is written in the image?", answer=digit, images=(image,),
                  answers=[digit], meta={"rationale": f"the segments spell {digit}"})


def vizwiz(rng: random.Random, size: int) -> Sample:
    question = "What color is the object in this photo? If it cannot be seen, answer unanswerable."
    if rng.random() < 0.3:
        # A dark, noisy photo: nothing can be seen.
        image, draw = _canvas(size, (20, 20, 20))
        for _ in range(size):
            x, y = rng.randrange(size), rng.randrange(size)
            g = rng.randrange(20, 90)
            draw.point((x, y), fill=(g, g, g))
        answer = "unanswerable"
    else:
        answer = rng.choice(COLOR_NAMES)
        image = _big_shape(rng, size, answer)
    return Sample(id="", question=question, answer=answer, images=(image,), answers=[answer],
                  meta={"rationale": "the photo shows " + answer})


def gqa(rng: random.Random, size: int) -> Sample:
    left, right = rng.sample(COLOR_NAMES, 2)
    image, draw = _canvas(size)
    for quadrants, color in (((0, 2), left), ((1, 3), right)):
        top, bottom = _quadrant_box(size, quadrants[0]), _quadrant_box(size, quadrants[1])
        box = (top[0], top[1], top[2], bottom[3])
        _draw_shape(draw, rng.choice(SHAPES), box, COLORS[color])
    side = rng.choice(("left", "right"))
    answer = left if side == "left" else right
    return Sample(id="", question=f"What color is the shape on the {side}?", answer=answer, images=(image,),
                  answers=[answer], meta={"rationale": f"the {side} shape is {answer}"})


def geometry(rng: random.Random, size: int) -> Sample:
    width, height = rng.randint(1, 3), rng.randint(1, 4)
    image, draw = _canvas(size)
    cell = size / 4
    for i in range(5):  # the unit grid
        draw.line((0, i * cell, size, i * cell), fill=(180, 180, 180))
        draw.line((i * cell, 0, i * cell, size), fill=(180, 180, 180))
    draw.rectangle((0, size - height * cell, width * cell, size), fill=COLORS["blue"])
    question = (f"A rectangle is drawn on a grid of unit squares; its width is {width}. "
                "Its height is the number of filled rows. What is its area?")
    return Sample(id="", question=question, answer=str(width * height), images=(image,),
                  meta={"rationale": f"{width} times {height} is {width * height}"})


def pathvqa(rng: random.Random, size: int) -> Sample:
    pattern = rng.choice(("striped", "checkered", "plain"))
    tint = rng.choice([(200, 120, 160), (150, 90, 170), (210, 150, 180)])
    image, draw = _canvas(size, (250, 230, 240))
    step = size // 8
    if pattern == "striped":
        for y in range(0, size, 2 * step):
            draw.rectangle((0, y, size, y + step - 1), fill=tint)
    elif pattern == "checkered":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2 == 0:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=tint)
    asked = rng.choice(("striped", "checkered"))
    answer = "yes" if asked == pattern else "no"
    return Sample(id="", question=f"Does the tissue show a {asked} pattern?", answer=answer, images=(image,),
                  answers=[answer], meta={"rationale": f"the pattern is {pattern}"})


def clevr(rng: random.Random, size: int) -> Sample:
    count = rng.randint(1, 4)
    image, draw = _canvas(size)
    for quadrant in rng.sample(range(4), count):
        _draw_shape(draw, rng.choice(SHAPES), _quadrant_box(size, quadrant), COLORS[rng.choice(COLOR_NAMES)])
    return Sample(id="", question="How many objects are there?", answer=str(count), images=(image,),
                  meta={"rationale": f"there are {count} objects"})


# ---------------------------------------------------------------------------------------------
# General benchmarks (evaluation only)


def pope(rng: random.Random, size: int) -> Sample:
    present = rng.sample(COLOR_NAMES, rng.randint(1, 2))
    image, draw = _canvas(size)
    for quadrant, color in zip(rng.sample(range(4), len(present)), present):
        _draw_shape(draw, rng.choice(SHAPES), _quadrant_box(size, quadrant, 0.1), COLORS[color])
    asked = rng.choice(COLOR_NAMES)
    answer = "yes" if asked in present else "no"
    return Sample(id="", question=f"Is there a {asked} object in the image?", answer=answer, images=(image,),
                  answers=[answer])


def mmmu(rng: random.Random, size: int) -> Sample:
    shape = rng.choice(SHAPES)
    choices = list(SHAPES) + ["star"]
    rng.shuffle(choices)
    image = _big_shape(rng, size, rng.choice(COLOR_NAMES), shape)
    question = f"Which shape is drawn?\n{format_choices(choices)}"
    return Sample(id="", question=question, answer="ABCD"[choices.index(shape)], images=(image,), choices=choices)


def mmlu(rng: random.Random, size: int) -> Sample:
    numbers = rng.sample(range(1, 10), 4)
    question = f"Which number is the largest?\n{format_choices([str(n) for n in numbers])}"
    return Sample(id="", question=question, answer="ABCD"[numbers.index(max(numbers))],
                  choices=[str(n) for n in numbers])


GENERATORS: dict[str, Callable[[random.Random, int], Sample]] = {
    "mini_scienceqa": scienceqa,
    "mini_textvqa": textvqa,
    "mini_vizwiz": vizwiz,
    "mini_gqa": gqa,
    "mini_geometry": geometry,
    "mini_pathvqa": pathvqa,
    "mini_clevr": clevr,
    "mini_pope": pope,
    "mini_mmmu": mmmu,
    "mini_mmlu": mmlu,
}
SEVEN = tuple(list(GENERATORS)[:7])
GENERAL = tuple(list(GENERATORS)[7:])


# ---------------------------------------------------------------------------------------------
# Text-only tasks (no image), for text-only models: shaped like the paper's math task and like
# MMLU-Pro's multiple choice. Not part of the mini seven, so the VLM testbed is unchanged.


def arithmetic(rng: random.Random, size: int) -> Sample:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return Sample(id="", question=f"What is {a} plus {b}?", answer=str(a + b),
                  meta={"rationale": f"{a} plus {b} is {a + b}"})


def word_geometry(rng: random.Random, size: int) -> Sample:
    width, height = rng.randint(1, 4), rng.randint(1, 4)
    question = f"A rectangle is {width} units wide and {height} units tall. What is its area?"
    return Sample(id="", question=question, answer=str(width * height),
                  meta={"rationale": f"{width} times {height} is {width * height}"})


def text_choice(rng: random.Random, size: int) -> Sample:
    asked = rng.choice(("color", "shape"))
    pool, other = (COLOR_NAMES, list(SHAPES) + ["star"]) if asked == "color" else (list(SHAPES), COLOR_NAMES)
    correct = rng.choice(pool)
    choices = [correct] + rng.sample(other, 3)
    rng.shuffle(choices)
    question = f"Which of these is a {asked}?\n{format_choices(choices)}"
    return Sample(id="", question=question, answer="ABCD"[choices.index(correct)], choices=choices,
                  meta={"rationale": f"{correct} is a {asked}"})


TEXT_GENERATORS: dict[str, Callable[[random.Random, int], Sample]] = {
    "mini_arithmetic": arithmetic,
    "mini_wordgeometry": word_geometry,
    "mini_textchoice": text_choice,
}
#: Every synthetic task whose samples carry no image: what a text-only model can train on.
TEXT_ONLY = (*TEXT_GENERATORS, "mini_mmlu")
ALL_GENERATORS = {**GENERATORS, **TEXT_GENERATORS}


def generate(kind: str, split: str, size: int, *, seed: int = 0, image_size: int = 56) -> list[Sample]:
    """`size` samples of one task's split, deterministic from (seed, kind, split, index)."""
    samples = []
    for index in range(size):
        sample = ALL_GENERATORS[kind](sample_rng(seed, kind, split, index), image_size)
        sample.id = f"{kind}/{split}/{index}"
        samples.append(sample)
    return samples


def tokenizer_corpus(seed: int = 0, per_task: int = 200, kinds=tuple(GENERATORS)) -> list[str]:
    """Texts the tiny tokenizer is trained on: the questions and answers of `kinds` (the mini seven
    and their benchmarks by default)."""
    texts = []
    for kind in kinds:
        for sample in generate(kind, "corpus", per_task, seed=seed, image_size=28):
            texts.append(sample.question)
            texts.append(sample.answer)
            texts.append(str(sample.meta.get("rationale", "")))
    return texts
