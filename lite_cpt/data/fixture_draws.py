"""Seeded random draws every dataset fixture shares: a small picture, rows cycled from a bank,
answer options shuffled around the correct one."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

_COLORS = [(200, 40, 40), (40, 160, 60), (40, 70, 210), (220, 200, 40), (140, 60, 160), (30, 30, 30)]


def picture(rng: random.Random, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), tuple(rng.randint(200, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):
        x0, y0 = rng.randint(0, size // 2), rng.randint(0, size // 2)
        box = (x0, y0, x0 + rng.randint(8, size // 2), y0 + rng.randint(8, size // 2))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=rng.choice(_COLORS))
    return image


def cycle(rng: random.Random, bank: list, n: int) -> list:
    """n entries of `bank`, in shuffled rounds: every entry occurs once n >= len(bank)."""
    out: list = []
    while len(out) < n:
        round_ = list(bank)
        rng.shuffle(round_)
        out += round_
    return out[:n]


def shuffled_choices(rng: random.Random, correct: str, others: list[str]) -> tuple[list[str], int]:
    choices = [correct, *others]
    rng.shuffle(choices)
    return choices, choices.index(correct)
