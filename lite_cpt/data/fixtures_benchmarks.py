"""Fixtures of the general benchmarks, in the Hugging Face hub's parquet layout
(`fixtures_hub`): MMMU (a config per subject, questions that reference several images),
MMLU-Pro (text only) and POPE."""

from __future__ import annotations

import random
import re
from pathlib import Path

from lite_cpt.data.fixture_draws import cycle, picture, shuffled_choices
from lite_cpt.data.fixtures_hub import (
    image_feature,
    int_feature,
    parquet_hash,
    png,
    string_feature,
    strings_feature,
    write_parquet,
)
from lite_cpt.data.sample import LETTERS

_MMMU = {
    "Accounting": [
        (
            (
                "Each of the following situations relates to a different company. <image 1> "
                "For company B, find the missing amount."
            ),
            "$77,490",
            ["$63,020", "$58,410", "$71,320"],
        ),
        (
            "Using the balance sheet in <image 1> and the income statement in <image 2>, compute the "
            "current ratio.",
            "2.5",
            ["1.2", "3.1", "0.8"],
        ),
        ("What is the net income shown in <image 1>?", "42", None),
    ],
    "Art": [
        ("Who painted <image 1>?", "Claude Monet", ["Pablo Picasso", "Vincent van Gogh", "Rembrandt"]),
        (
            "Which of the paintings below shares the style of <image 1>?",
            "<image 3>",
            ["<image 2>", "<image 4>", "<image 5>"],
        ),
        (
            "Which movement does the work in <image 1> belong to?",
            "Impressionism",
            ["Cubism", "Baroque", "Surrealism"],
        ),
        ("In what year was the work in <image 1> completed (to the nearest decade)?", "1870", None),
    ],
}

_MMLU_PRO = [
    (
        "Find the characteristic of the ring 2Z.",
        "0",
        ["30", "3", "10", "12", "50", "2", "100", "20", "5"],
        "math",
    ),
    (
        "Which of the following is the body cavity that contains the pituitary gland?",
        "Cranial",
        [
            "Ventral",
            "Dorsal",
            "Buccal",
            "Thoracic",
            "Pericardial",
            "Abdominal",
            "Spinal",
            "Pelvic",
            "Pleural",
        ],
        "health",
    ),
    (
        "What is the SI unit of electric charge?",
        "coulomb",
        ["ampere", "volt", "ohm", "farad", "tesla", "weber", "henry", "siemens", "joule"],
        "physics",
    ),
    (
        "Which economist is associated with the theory of comparative advantage?",
        "David Ricardo",
        ["Adam Smith", "John Maynard Keynes", "Karl Marx", "Milton Friedman"],
        "economics",
    ),
]

_POPE_OBJECTS = ["snowboard", "dining table", "person", "car", "dog", "umbrella", "bottle", "chair"]


def write_mmmu(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "id": string_feature(),
        "question": string_feature(),
        "options": string_feature(),
        "explanation": string_feature(),
        **{f"image_{k}": image_feature() for k in range(1, 8)},
        "img_type": string_feature(),
        "answer": string_feature(),
        "topic_difficulty": string_feature(),
        "question_type": string_feature(),
        "subfield": string_feature(),
    }
    subjects = list(_MMMU)
    for split, total in (("dev", len(subjects)), ("validation", n)):
        for s, subject in enumerate(subjects):
            rows = []
            count = total // len(subjects) + (s < total % len(subjects))
            for i, (question, correct, others) in enumerate(cycle(rng, _MMMU[subject], count)):
                if others is None:
                    options, answer, kind = [], correct, "open"
                else:
                    options, index = shuffled_choices(rng, correct, list(others))
                    answer, kind = LETTERS[index], "multiple-choice"
                rows.append(
                    {
                        "id": f"{split}_{subject}_{i + 1}",
                        "question": question,
                        "options": repr(options),
                        "explanation": "",
                        **_mmmu_images(rng, size, question, options),
                        "img_type": "['Tables']",
                        "answer": answer,
                        "topic_difficulty": rng.choice(["Easy", "Medium", "Hard"]),
                        "question_type": kind,
                        "subfield": subject,
                    }
                )
            write_parquet(base / subject / f"{split}-00000-of-00001.parquet", rows, features)


def _mmmu_images(rng: random.Random, size: int, question: str, options: list[str]) -> dict:
    """image_1..image_7: a picture for every `<image k>` the question or its options name."""
    used = {int(k) for text in (question, *options) for k in re.findall(r"<image (\d+)>", text)} or {1}
    return {f"image_{k}": png(picture(rng, size), None) if k in used else None for k in range(1, 8)}


def write_mmlu_pro(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "question_id": int_feature("int64"),
        "question": string_feature(),
        "options": strings_feature(),
        "answer": string_feature(),
        "answer_index": int_feature("int64"),
        "cot_content": string_feature(),
        "category": string_feature(),
        "src": string_feature(),
    }
    for split in ("test", "validation"):
        rows = []
        picks = cycle(rng, _MMLU_PRO, n)
        ten = next(k for k, p in enumerate(picks) if len(p[2]) == 9)
        picks[0], picks[ten] = picks[ten], picks[0]
        for i, (question, correct, others, category) in enumerate(picks):
            options, index = shuffled_choices(rng, correct, list(others))
            if i == 0:  # the tenth letter occurs in every split
                options[index], options[9] = options[9], options[index]
                index = 9
            rows.append(
                {
                    "question_id": 70 + i,
                    "question": question,
                    "options": options,
                    "answer": LETTERS[index],
                    "answer_index": index,
                    "cot_content": (
                        f"A: Let's think step by step. ... The answer is ({LETTERS[index]})."
                        if split == "validation"
                        else ""
                    ),
                    "category": category,
                    "src": f"ori_mmlu-{category}",
                }
            )
        write_parquet(base / "data" / f"{split}-00000-of-00001.parquet", rows, features)


def write_pope(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "id": string_feature(),
        "question_id": string_feature(),
        "question": string_feature(),
        "answer": string_feature(),
        "image_source": string_feature(),
        "image": image_feature(),
        "category": string_feature(),
    }
    rows = []
    for i in range(n):
        source = f"COCO_val2014_{rng.randint(1, 581929):012d}"
        rows.append(
            {
                "id": str(i),
                "question_id": str(i + 1),
                "question": f"Is there a {rng.choice(_POPE_OBJECTS)} in the image?",
                "answer": "yes" if i % 2 == 0 else "no",
                "image_source": source,
                "image": png(picture(rng, size), f"{source}.jpg"),
                "category": ("adversarial", "popular", "random")[i % 3],
            }
        )
    write_parquet(base / "data" / f"test-00000-of-00001-{parquet_hash(rng)}.parquet", rows, features)
