"""Fixtures in the datasets' official releases, not the hub: VizWiz (`{train,val}.json` and
`{train,val}/VizWiz_<split>_<n>.jpg`) and GQA (`{train,testdev}_balanced_questions.json` keyed by
question id, and `images/<imageId>.jpg`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from lite_cpt.data.fixture_draws import cycle, picture

_VIZWIZ = [
    ("What is this?", ["unanswerable"] * 6 + ["blurry"] * 2 + ["keyboard"] * 2, "unanswerable", 0),
    ("What color is this shirt?", ["blue"] * 8 + ["navy blue"] * 2, "other", 1),
    ("Is this a can of soup?", ["yes"] * 9 + ["unanswerable"], "yes/no", 1),
    ("How many pills are in my hand?", ["3"] * 5 + ["three"] * 3 + ["unanswerable"] * 2, "number", 1),
    ("What flavor is this tea?", ["unanswerable"] * 10, "unanswerable", 0),
    (
        "What does this label say?",
        ["campbell's chicken noodle soup"] * 3 + ["chicken noodle soup"] * 5 + ["soup"] * 2,
        "other",
        1,
    ),
]

_GQA = [
    ("Is the cup to the left or to the right of the plate?", "left", "The cup is to the left of the plate."),
    ("What color is the car?", "white", "The car is white."),
    ("Are there both cars and trucks in this picture?", "no", "No, there is a car but no trucks."),
    ("Who is wearing the shirt?", "man", "The man is wearing a shirt."),
    (
        "What is the piece of furniture to the left of the lamp?",
        "couch",
        "The piece of furniture is a couch.",
    ),
    ("Is the sky cloudy?", "yes", "Yes, the sky is cloudy."),
]


def write_vizwiz(base: Path, n: int, rng: random.Random, size: int) -> None:
    for split in ("train", "val"):
        rows = []
        for i, (question, answers, answer_type, answerable) in enumerate(cycle(rng, _VIZWIZ, n)):
            name = f"VizWiz_{split}_{i:08d}.jpg"
            (base / split).mkdir(parents=True, exist_ok=True)
            picture(rng, size).save(base / split / name, format="JPEG")
            rows.append(
                {
                    "image": name,
                    "question": question,
                    "answers": [
                        {"answer": a, "answer_confidence": rng.choice(["yes", "maybe"])} for a in answers
                    ],
                    "answer_type": answer_type,
                    "answerable": answerable,
                }
            )
        (base / f"{split}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


def write_gqa(base: Path, n: int, rng: random.Random, size: int) -> None:
    (base / "images").mkdir(parents=True, exist_ok=True)
    for split in ("train", "testdev"):
        questions = {}
        for question, answer, full in cycle(rng, _GQA, n):
            image_id = (
                f"n{rng.randint(10000, 999999)}" if split == "testdev" else str(rng.randint(2300000, 2420000))
            )
            picture(rng, size).save(base / "images" / f"{image_id}.jpg", format="JPEG")
            questions[str(rng.randint(200000000, 209999999))] = {  # keyed by question id, no id inside
                "semantic": [{"operation": "select", "dependencies": [], "argument": "car (2)"}],
                "entailed": [],
                "equivalent": [],
                "question": question,
                "imageId": image_id,
                "isBalanced": True,
                "groups": {"global": None, "local": "10q-car_color"},
                "answer": answer,
                "semanticStr": "select: car (2)->query: color [0]",
                "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
                "types": {"detailed": "verifyAttr", "semantic": "attr", "structural": "query"},
                "fullAnswer": full,
            }
        (base / f"{split}_balanced_questions.json").write_text(json.dumps(questions), encoding="utf-8")
