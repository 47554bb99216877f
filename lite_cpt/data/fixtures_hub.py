"""Dataset fixtures in the Hugging Face hub's layout: parquet files with `Image` features
(embedded PNG bytes), named as each repo's parquet converter names them and published into a hub
cache the way `hf download` lays it out; and the training tasks published that way (ScienceQA,
TextVQA, Geometry3K, PathVQA, CLEVR). The general benchmarks are in `fixtures_benchmarks`."""

from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path

from PIL import Image

from lite_cpt.data.fixture_draws import cycle, picture, shuffled_choices


def png(image: Image.Image, name: str | None) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": name}


def write_parquet(path: Path, rows: list[dict], features: dict) -> None:
    from datasets import Dataset, Features
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    path.parent.mkdir(parents=True, exist_ok=True)
    bars = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        Dataset.from_list(rows, features=Features(features)).to_parquet(str(path))
    finally:
        if bars:
            enable_progress_bar()


def image_feature():
    from datasets import Image as ImageFeature

    return ImageFeature()


def string_feature():
    from datasets import Value

    return Value("string")


def int_feature(dtype: str):
    from datasets import Value

    return Value(dtype)


def strings_feature():
    from datasets import List, Value

    return List(Value("string"))


def parquet_hash(rng: random.Random) -> str:
    """The content-hash suffix the hub's parquet converter gives file names."""
    return f"{rng.getrandbits(64):016x}"


def publish_to_hub_cache(files_dir: Path, cache: Path, hf_id: str, commit: str) -> Path:
    """Move a repo's files into a hub cache the way `hf download` lays it out: content in
    `blobs/<sha256>`, `snapshots/<commit>/<path>` symlinks to the blobs, `refs/main` = commit.
    Returns the snapshot directory."""
    repo = cache / f"datasets--{hf_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for path in sorted(p for p in files_dir.rglob("*") if p.is_file()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(files_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


# ---------------------------------------------------------------------------------------------
# Row banks (question, answer material) in each dataset's own style

_SCIENCEQA = [
    (
        "Which of these states is farthest north?",
        "West Virginia",
        ["Louisiana", "Arizona", "Oklahoma"],
        "Maps have four cardinal directions.",
        "To find the answer, look at the compass rose. West Virginia is farthest north.",
    ),
    (
        "Which animal's feet are also adapted for sticking to smooth surfaces?",
        "tokay gecko",
        ["hippopotamus"],
        "An adaptation is an inherited trait.",
        "The tokay gecko has sticky pads on its toes.",
    ),
    (
        "Identify the question that Tom's experiment can best answer.",
        "Does fertilizer make tomato plants grow taller?",
        ["Do tomato plants need sunlight?"],
        "Experiments can be designed to answer specific questions.",
        "Tom changed only the fertilizer.",
    ),
    (
        "Which material is this spatula made of?",
        "rubber",
        ["cotton"],
        "A material is a type of matter.",
        "Look at the picture of the spatula. The spatula is made of rubber.",
    ),
    (
        "Think about the magnetic force between the magnets in each pair. Which is true?",
        "The magnitude of the magnetic force is smaller in Pair 2.",
        [
            "The magnitude of the magnetic force is smaller in Pair 1.",
            "The magnitude of the magnetic force is the same in both pairs.",
        ],
        "Magnets can pull or push on each other without touching.",
        "Distance affects the magnitude of the magnetic force.",
    ),
    (
        "What is the capital of Utah?",
        "Salt Lake City",
        ["Provo", "Denver", "Cheyenne"],
        "",
        "Salt Lake City is the capital of Utah.",
    ),
]
_SCIENCEQA_TEXT_ONLY = [
    (
        "Which tense does the sentence use?\nMona will print her name with care.",
        "future tense",
        ["present tense", "past tense"],
    ),
    ("Which word would you find on a dictionary page with the guide words hat - horse?", "hike", ["hunt"]),
]

_TEXTVQA = [
    ("what is the brand of this camera?", ["nikon"] * 7 + ["nikon d3300"] * 2 + ["dslr"]),
    ("what number is on the player's jersey?", ["22"] * 9 + ["twenty two"]),
    ("what does the sign say?", ["stop"] * 10),
    ("what time is shown on the clock?", ["10:10"] * 2 + ["ten past ten"] * 2 + ["10:09"] * 6),
    ("what is the title of the book?", ["the hobbit"] * 2 + ["hobbit"] * 3 + ["tolkien"] * 5),
    ("what year is printed on the coin?", ["1999"] * 8 + ["1998"] * 2),
    ("what brand of soda is this?", ["coca cola"] * 4 + ["coke"] * 4 + ["coca-cola"] * 2),
]

_GEOMETRY = [
    ("Find x.", "3\\sqrt{3}", ["3", "3\\sqrt{2}", "6"]),
    ("Find m \\angle 2.", "52", ["38", "104", "128"]),
    ("Find y.", "\\frac{40}{3}", ["\\frac{20}{3}", "10", "\\frac{50}{3}"]),
    ("Find the length of the hypotenuse.", "6\\sqrt{2}", ["6", "12", "6\\sqrt{3}"]),
    ("Find the area of the triangle.", "22.5", ["11.25", "45", "30"]),
    ("Find x. Round to the nearest tenth if necessary.", "2\\sqrt{221}", ["\\sqrt{221}", "29.7", "14.9"]),
    ("Find the height of the equilateral triangle.", "\\frac{5\\sqrt{3}}{2}", ["5", "\\frac{5}{2}", "5\\sqrt{3}"]),
    ("Find m \\angle B.", "60", ["30", "45", "120"]),
]

_PATHVQA = [
    ("Is the nucleus enlarged?", "yes"),
    ("Are the hepatocytes necrotic?", "no"),
    ("What does this image show?", "metastatic carcinoma"),
    ("Where is this from?", "lung"),
    ("How is the mucosa?", "ulcerated"),
    ("Does this image show fibrosis?", "yes"),
    ("Is there inflammation in the dermis?", "no"),
]

_CLEVR = [
    ("How many objects are there?", 3),
    ("Subtract all red things. How many objects are left?", 2),
    ("Subtract all tiny matte balls. Subtract all cyan cylinders. How many objects are left?", 5),
    ("How many cubes are there?", 1),
    ("Subtract all big blue cubes. How many objects are left?", 4),
    ("Subtract all spheres. How many objects are left?", 0),
]


# ---------------------------------------------------------------------------------------------
# Writers, one per dataset


def write_scienceqa(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "image": image_feature(),
        "question": string_feature(),
        "choices": strings_feature(),
        "answer": int_feature("int8"),
        "hint": string_feature(),
        "task": string_feature(),
        "grade": string_feature(),
        "subject": string_feature(),
        "topic": string_feature(),
        "category": string_feature(),
        "skill": string_feature(),
        "lecture": string_feature(),
        "solution": string_feature(),
    }
    for split in ("train", "validation", "test"):
        rows = []
        with_image_rows = cycle(rng, _SCIENCEQA, n)
        text_rows = cycle(rng, _SCIENCEQA_TEXT_ONLY, max(1, n // 4))
        for i in range(n + max(1, n // 4)):
            with_image = i < n
            if with_image:
                question, correct, others, lecture, solution = with_image_rows[i]
            else:  # ScienceQA has text-only questions too; the task skips them
                question, correct, others = text_rows[i - n]
                lecture, solution = "", ""
            choices, answer = shuffled_choices(rng, correct, others)
            rows.append(
                {
                    "image": png(picture(rng, size), "image.png") if with_image else None,
                    "question": question,
                    "choices": choices,
                    "answer": answer,
                    "hint": "Figure: a map." if with_image and rng.random() < 0.5 else "",
                    "task": "closed choice",
                    "grade": f"grade{rng.randint(2, 8)}",
                    "subject": "natural science",
                    "topic": "science-and-engineering-practices",
                    "category": "Designing experiments",
                    "skill": "Identify the experimental question",
                    "lecture": lecture,
                    "solution": solution,
                }
            )
        rng.shuffle(rows)
        write_parquet(base / "data" / f"{split}-00000-of-00001-{parquet_hash(rng)}.parquet", rows, features)


def write_textvqa(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "image_id": string_feature(),
        "question_id": int_feature("int32"),
        "question": string_feature(),
        "question_tokens": strings_feature(),
        "image": image_feature(),
        "image_width": int_feature("int32"),
        "image_height": int_feature("int32"),
        "flickr_original_url": string_feature(),
        "flickr_300k_url": string_feature(),
        "answers": strings_feature(),
        "image_classes": strings_feature(),
        "set_name": string_feature(),
        "ocr_tokens": strings_feature(),
    }
    for offset, split in enumerate(("train", "validation")):
        rows = []
        for i, (question, answers) in enumerate(cycle(rng, _TEXTVQA, n)):
            answers = list(answers)
            rng.shuffle(answers)
            image_id = f"{rng.getrandbits(64):016x}"
            rows.append(
                {
                    "image_id": image_id,
                    "question_id": 34602 + 1000 * offset + i,
                    "question": question,
                    "question_tokens": question.rstrip("?").split(),
                    "image": png(picture(rng, size), f"{image_id}.jpg"),
                    "image_width": size,
                    "image_height": size,
                    "flickr_original_url": f"https://farm2.staticflickr.com/{image_id}_o.jpg",
                    "flickr_300k_url": f"https://c4.staticflickr.com/{image_id}_z.jpg",
                    "answers": answers,
                    "image_classes": ["Camera"],
                    "set_name": split,
                    "ocr_tokens": sorted(set(" ".join(answers).split()))[:5],
                }
            )
        write_parquet(base / "data" / f"{split}-00000-of-00001.parquet", rows, features)


def write_geometry3k(base: Path, n: int, rng: random.Random, size: int) -> None:
    from datasets import Image as ImageFeature
    from datasets import List

    features = {"images": List(ImageFeature()), "problem": string_feature(), "answer": string_feature(), "choices": strings_feature()}
    for split in ("train", "validation", "test"):
        rows = []
        for problem, answer, others in cycle(rng, _GEOMETRY, n):
            choices, _ = shuffled_choices(rng, answer, list(others))
            rows.append(
                {
                    "images": [png(picture(rng, size), None)],
                    "problem": f"<image>{problem}",
                    "answer": answer,
                    "choices": choices,
                }
            )
        write_parquet(base / "data" / f"{split}-00000-of-00001.parquet", rows, features)


def write_pathvqa(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {"image": image_feature(), "question": string_feature(), "answer": string_feature()}
    for split in ("train", "validation", "test"):
        rows = []
        for question, answer in cycle(rng, _PATHVQA, n):
            rows.append({"image": png(picture(rng, size), None), "question": question, "answer": answer})
        write_parquet(base / "data" / f"{split}-00000-of-00001-{parquet_hash(rng)}.parquet", rows, features)


def write_clevr(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {"image": image_feature(), "problem": string_feature(), "solution": string_feature()}
    rows = []
    for problem, count in cycle(rng, _CLEVR, 2 * n):  # one published split; recipes slice it
        rows.append(
            {
                "image": png(picture(rng, size), None),
                "problem": problem,
                "solution": f"<answer> {count} </answer>",
            }
        )
    write_parquet(base / "data" / f"train-00000-of-00001-{parquet_hash(rng)}.parquet", rows, features)
