"""Small stand-ins for the real datasets, written in each one's published schema and layout.

`write_fixtures(root)` fills `root` the way the real data sits under `data.root` after each
dataset's download command (see each task type's `dataset`, the one place its identity lives):

    hub/datasets--derek-thomas--ScienceQA/...            a Hugging Face hub cache (blobs, refs/main,
    hub/datasets--lmms-lab--textvqa/...                  snapshots/<commit>/ linking to the blobs), with
    hub/datasets--hiyouga--geometry3k/...                each repo's parquet file names, e.g.
    hub/datasets--flaviagiammarino--path-vqa/...         data/train-00000-of-00001-<hash>.parquet,
    hub/datasets--leonardPKU--clevr_cogen_a_train/...    MMMU's <Subject>/validation-00000-of-00001.parquet
    hub/datasets--MMMU--MMMU/...
    hub/datasets--TIGER-Lab--MMLU-Pro/...
    hub/datasets--lmms-lab--POPE/...
    vizwiz/{train,val}.json + vizwiz/{train,val}/VizWiz_<split>_<n>.jpg     the official VizWiz release
    gqa/{train,testdev}_balanced_questions.json + gqa/images/<imageId>.jpg  the official GQA release

Parquet files carry Hugging Face `Image` features with embedded PNG bytes, as the hub's do;
ScienceQA has text-only rows (null image), Geometry3K a `choices` column, MMMU questions that
reference several images. Contents are drawn from small banks of realistic rows, seeded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from lite_cpt.data.sample import LETTERS

_COLORS = [(200, 40, 40), (40, 160, 60), (40, 70, 210), (220, 200, 40), (140, 60, 160), (30, 30, 30)]


def _picture(rng: random.Random, size: int) -> Image.Image:
    image = Image.new("RGB", (size, size), tuple(rng.randint(200, 255) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(1, 3)):
        x0, y0 = rng.randint(0, size // 2), rng.randint(0, size // 2)
        box = (x0, y0, x0 + rng.randint(8, size // 2), y0 + rng.randint(8, size // 2))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=rng.choice(_COLORS))
    return image


def _png(image: Image.Image, name: str | None) -> dict:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": name}


def _write_parquet(path: Path, rows: list[dict], features: dict) -> None:
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


def _cycle(rng: random.Random, bank: list, n: int) -> list:
    """n entries of `bank`, in shuffled rounds: every entry occurs once n >= len(bank)."""
    out: list = []
    while len(out) < n:
        round_ = list(bank)
        rng.shuffle(round_)
        out += round_
    return out[:n]


def _shuffled_choices(rng: random.Random, correct: str, others: list[str]) -> tuple[list[str], int]:
    choices = [correct, *others]
    rng.shuffle(choices)
    return choices, choices.index(correct)


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


# ---------------------------------------------------------------------------------------------
# Writers, one per dataset


def _scienceqa(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "image": _image_feature(),
        "question": _string(),
        "choices": _strings(),
        "answer": _int("int8"),
        "hint": _string(),
        "task": _string(),
        "grade": _string(),
        "subject": _string(),
        "topic": _string(),
        "category": _string(),
        "skill": _string(),
        "lecture": _string(),
        "solution": _string(),
    }
    for split in ("train", "validation", "test"):
        rows = []
        with_image_rows = _cycle(rng, _SCIENCEQA, n)
        text_rows = _cycle(rng, _SCIENCEQA_TEXT_ONLY, max(1, n // 4))
        for i in range(n + max(1, n // 4)):
            with_image = i < n
            if with_image:
                question, correct, others, lecture, solution = with_image_rows[i]
            else:  # ScienceQA has text-only questions too; the task skips them
                question, correct, others = text_rows[i - n]
                lecture, solution = "", ""
            choices, answer = _shuffled_choices(rng, correct, others)
            rows.append(
                {
                    "image": _png(_picture(rng, size), "image.png") if with_image else None,
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
        _write_parquet(base / "data" / f"{split}-00000-of-00001-{_hash(rng)}.parquet", rows, features)


def _textvqa(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "image_id": _string(),
        "question_id": _int("int32"),
        "question": _string(),
        "question_tokens": _strings(),
        "image": _image_feature(),
        "image_width": _int("int32"),
        "image_height": _int("int32"),
        "flickr_original_url": _string(),
        "flickr_300k_url": _string(),
        "answers": _strings(),
        "image_classes": _strings(),
        "set_name": _string(),
        "ocr_tokens": _strings(),
    }
    for offset, split in enumerate(("train", "validation")):
        rows = []
        for i, (question, answers) in enumerate(_cycle(rng, _TEXTVQA, n)):
            answers = list(answers)
            rng.shuffle(answers)
            image_id = f"{rng.getrandbits(64):016x}"
            rows.append(
                {
                    "image_id": image_id,
                    "question_id": 34602 + 1000 * offset + i,
                    "question": question,
                    "question_tokens": question.rstrip("?").split(),
                    "image": _png(_picture(rng, size), f"{image_id}.jpg"),
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
        _write_parquet(base / "data" / f"{split}-00000-of-00001.parquet", rows, features)


def _vizwiz(base: Path, n: int, rng: random.Random, size: int) -> None:
    for split in ("train", "val"):
        rows = []
        for i, (question, answers, answer_type, answerable) in enumerate(_cycle(rng, _VIZWIZ, n)):
            name = f"VizWiz_{split}_{i:08d}.jpg"
            (base / split).mkdir(parents=True, exist_ok=True)
            _picture(rng, size).save(base / split / name, format="JPEG")
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


def _gqa(base: Path, n: int, rng: random.Random, size: int) -> None:
    (base / "images").mkdir(parents=True, exist_ok=True)
    for split in ("train", "testdev"):
        questions = {}
        for question, answer, full in _cycle(rng, _GQA, n):
            image_id = (
                f"n{rng.randint(10000, 999999)}" if split == "testdev" else str(rng.randint(2300000, 2420000))
            )
            _picture(rng, size).save(base / "images" / f"{image_id}.jpg", format="JPEG")
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


def _geometry3k(base: Path, n: int, rng: random.Random, size: int) -> None:
    from datasets import Image as ImageFeature
    from datasets import List

    features = {"images": List(ImageFeature()), "problem": _string(), "answer": _string(), "choices": _strings()}
    for split in ("train", "validation", "test"):
        rows = []
        for problem, answer, others in _cycle(rng, _GEOMETRY, n):
            choices, _ = _shuffled_choices(rng, answer, list(others))
            rows.append(
                {
                    "images": [_png(_picture(rng, size), None)],
                    "problem": f"<image>{problem}",
                    "answer": answer,
                    "choices": choices,
                }
            )
        _write_parquet(base / "data" / f"{split}-00000-of-00001.parquet", rows, features)


def _pathvqa(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {"image": _image_feature(), "question": _string(), "answer": _string()}
    for split in ("train", "validation", "test"):
        rows = []
        for question, answer in _cycle(rng, _PATHVQA, n):
            rows.append({"image": _png(_picture(rng, size), None), "question": question, "answer": answer})
        _write_parquet(base / "data" / f"{split}-00000-of-00001-{_hash(rng)}.parquet", rows, features)


def _clevr(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {"image": _image_feature(), "problem": _string(), "solution": _string()}
    rows = []
    for problem, count in _cycle(rng, _CLEVR, 2 * n):  # one published split; recipes slice it
        rows.append(
            {
                "image": _png(_picture(rng, size), None),
                "problem": problem,
                "solution": f"<answer> {count} </answer>",
            }
        )
    _write_parquet(base / "data" / f"train-00000-of-00001-{_hash(rng)}.parquet", rows, features)


def _mmmu(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "id": _string(),
        "question": _string(),
        "options": _string(),
        "explanation": _string(),
        **{f"image_{k}": _image_feature() for k in range(1, 8)},
        "img_type": _string(),
        "answer": _string(),
        "topic_difficulty": _string(),
        "question_type": _string(),
        "subfield": _string(),
    }
    subjects = list(_MMMU)
    for split, total in (("dev", len(subjects)), ("validation", n)):
        for s, subject in enumerate(subjects):
            rows = []
            count = total // len(subjects) + (s < total % len(subjects))
            for i, (question, correct, others) in enumerate(_cycle(rng, _MMMU[subject], count)):
                if others is None:
                    options, answer, kind = [], correct, "open"
                else:
                    options, index = _shuffled_choices(rng, correct, list(others))
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
            _write_parquet(base / subject / f"{split}-00000-of-00001.parquet", rows, features)


def _mmmu_images(rng: random.Random, size: int, question: str, options: list[str]) -> dict:
    """image_1..image_7: a picture for every `<image k>` the question or its options name."""
    used = {int(k) for text in (question, *options) for k in re.findall(r"<image (\d+)>", text)} or {1}
    return {f"image_{k}": _png(_picture(rng, size), None) if k in used else None for k in range(1, 8)}


def _mmlu_pro(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "question_id": _int("int64"),
        "question": _string(),
        "options": _strings(),
        "answer": _string(),
        "answer_index": _int("int64"),
        "cot_content": _string(),
        "category": _string(),
        "src": _string(),
    }
    for split in ("test", "validation"):
        rows = []
        picks = _cycle(rng, _MMLU_PRO, n)
        ten = next(k for k, p in enumerate(picks) if len(p[2]) == 9)
        picks[0], picks[ten] = picks[ten], picks[0]
        for i, (question, correct, others, category) in enumerate(picks):
            options, index = _shuffled_choices(rng, correct, list(others))
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
        _write_parquet(base / "data" / f"{split}-00000-of-00001.parquet", rows, features)


def _pope(base: Path, n: int, rng: random.Random, size: int) -> None:
    features = {
        "id": _string(),
        "question_id": _string(),
        "question": _string(),
        "answer": _string(),
        "image_source": _string(),
        "image": _image_feature(),
        "category": _string(),
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
                "image": _png(_picture(rng, size), f"{source}.jpg"),
                "category": ("adversarial", "popular", "random")[i % 3],
            }
        )
    _write_parquet(base / "data" / f"test-00000-of-00001-{_hash(rng)}.parquet", rows, features)


def _image_feature():
    from datasets import Image as ImageFeature

    return ImageFeature()


def _string():
    from datasets import Value

    return Value("string")


def _int(dtype: str):
    from datasets import Value

    return Value(dtype)


def _strings():
    from datasets import List, Value

    return List(Value("string"))


WRITERS: dict[str, Callable[[Path, int, random.Random, int], None]] = {
    "scienceqa": _scienceqa,
    "textvqa": _textvqa,
    "vizwiz": _vizwiz,
    "gqa": _gqa,
    "geometry3k": _geometry3k,
    "pathvqa": _pathvqa,
    "clevr": _clevr,
    "mmmu": _mmmu,
    "mmlu_pro": _mmlu_pro,
    "pope": _pope,
}
#: The layout of GQA the fixtures write (the official release); the hub one is tested on its own.
OFFICIAL_LAYOUT = {"vizwiz", "gqa"}


def _hash(rng: random.Random) -> str:
    """The content-hash suffix the hub's parquet converter gives file names."""
    return f"{rng.getrandbits(64):016x}"


def dataset_spec(type_name: str):
    """The `DatasetSpec` a task (or benchmark) type states: what the fixtures are written from."""
    from lite_cpt.tasks import BENCHMARK_TYPES, TASK_TYPES

    return (TASK_TYPES.get(type_name) or BENCHMARK_TYPES[type_name]).dataset


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


def write_fixtures(root: Path, n: int = 8, seed: int = 0, image_size: int = 56) -> Path:
    """Write every dataset's fixture under `root` (see the module docstring) and return `root`.
    `n` rows per split (ScienceQA adds text-only rows; CLEVR's single split has 2n)."""
    root = Path(root)
    for name, writer in WRITERS.items():
        rng = random.Random(f"{seed}/{name}")
        spec = dataset_spec(name)
        if name in OFFICIAL_LAYOUT:
            writer(root / spec.path, n, rng, image_size)
            continue
        staging = root / ".staging" / name
        shutil.rmtree(staging, ignore_errors=True)
        writer(staging, n, rng, image_size)
        publish_to_hub_cache(staging, root / "hub", spec.hf_id, hashlib.sha1(f"{seed}/{name}".encode()).hexdigest())
        shutil.rmtree(staging)
    shutil.rmtree(root / ".staging", ignore_errors=True)
    return root
