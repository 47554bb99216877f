"""A task holds references to images, never their bytes: opening a large split and drawing a
training sample from it costs memory for the drawn rows' text, not for the split's images or its
other rows. The split is ScienceQA's published schema (13 columns, a unique image on every row,
lecture and solution texts of the published average lengths), 100,000 rows.

Memory is the process's private (anonymous) resident memory: the split's arrow file is
memory-mapped, and the pages of it the kernel keeps are page cache it can drop at any time."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROWS = 100_000
IMAGE_PIXELS = 26  # a 26x26 noise PNG: ~2.2 KB, a different one on every row: ~220 MB of images
CHUNK = 10_000  # rows written at a time, so building the split needs little memory itself

# Text in the shape of derek-thomas/ScienceQA's rows (its dataset card's 13 columns and types:
# image, question, choices: list<string>, answer: int8, hint, task, grade, subject, topic,
# category, skill, lecture, solution). Lengths follow the published statistics: a question of
# about 12 words, a hint (context) on about half the rows, a lecture of about 125 words and a
# solution of about 50.
SENTENCES = [
    "Maps have four cardinal directions, or main directions.",
    "Those directions are north, south, east, and west.",
    "A compass rose is a set of arrows that point to the cardinal directions.",
    "A compass rose usually shows only the first letter of each cardinal direction.",
    "The north arrow points to the North Pole. On most maps, north is at the top of the map.",
    "An object's velocity tells you the direction and speed of its motion.",
    "Offspring phenotypes depend on the genotypes of their parents.",
    "Magnets can pull or push on each other without touching.",
]
CHOICES = ["West Virginia", "Louisiana", "Arizona", "Oklahoma", "attract", "repel", "solid", "liquid"]


def _text(rng: np.random.Generator, words: int, row: int) -> str:
    picked, text = [], ""
    while len(text.split()) < words:
        picked.append(SENTENCES[int(rng.integers(len(SENTENCES)))])
        text = " ".join(picked)
    return f"{text} ({row})"


def _chunk(rng: np.random.Generator, first: int, rows: int) -> dict:
    images, columns = [], {k: [] for k in ("question", "choices", "answer", "hint", "lecture", "solution")}
    for row in range(first, first + rows):
        buffer = io.BytesIO()
        noise = rng.integers(0, 255, (IMAGE_PIXELS, IMAGE_PIXELS, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": None})
        options = int(rng.integers(2, 5))
        columns["question"].append(f"Which of these states is farthest north? ({row})")
        columns["choices"].append([CHOICES[(row + k) % len(CHOICES)] for k in range(options)])
        columns["answer"].append(row % options)
        columns["hint"].append(_text(rng, 30, row) if row % 2 else "")
        columns["lecture"].append(_text(rng, 125, row))
        columns["solution"].append(_text(rng, 50, row))
    fixed = {"task": "closed choice", "grade": "grade4", "subject": "social science", "topic": "geography",
             "category": "Geography", "skill": "Read a map: cardinal directions"}
    return {"image": images, **columns, **{k: [v] * rows for k, v in fixed.items()}}


def _write_split(directory: Path, rows: int = ROWS) -> int:
    """A ScienceQA parquet split of `rows` rows in the published schema, each row with its own
    embedded PNG; returns the bytes of images it holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features, Image as ImageFeature, List, Value

    string = Value("string")
    features = Features({
        "image": ImageFeature(), "question": string, "choices": List(string), "answer": Value("int8"),
        "hint": string, "task": string, "grade": string, "subject": string, "topic": string,
        "category": string, "skill": string, "lecture": string, "solution": string,
    })
    schema = features.arrow_schema
    (directory / "data").mkdir(parents=True)
    rng, image_bytes = np.random.default_rng(0), 0
    with pq.ParquetWriter(directory / "data" / "train-00000-of-00001.parquet", schema) as writer:
        for first in range(0, rows, CHUNK):
            columns = _chunk(rng, first, min(CHUNK, rows - first))
            image_bytes += sum(len(image["bytes"]) for image in columns["image"])
            writer.write_table(pa.table({name: pa.array(columns[name], type=schema.field(name).type)
                                         for name in schema.names}, schema=schema))
    return image_bytes


MEASURE = textwrap.dedent("""
    import json, sys
    from lite_cpt.data.images import decode_image
    from lite_cpt.recipe_tasks import TaskConfig
    from lite_cpt.tasks import build_task

    def rss():  # private resident memory, bytes
        status = open("/proc/self/status").read()
        return int(status.split("RssAnon:")[1].split()[0]) * 1024

    def task_at(path):
        return build_task(TaskConfig(name="t", type="scienceqa", source={"path": path}), None, seed=0)

    task, warm_up = task_at(sys.argv[1]), task_at(sys.argv[3])
    if sys.argv[2] == "prepare":  # the one-time parquet -> arrow conversion `datasets` does
        task.count("train"), warm_up.count("train")
        sys.exit(0)
    # the same steps on a 10-row split first, so the libraries' own first-use memory is not counted
    [decode_image(ref, s.id) for s in warm_up.load("train", 2) for ref in s.images]
    before = rss()
    rows = task.count("train")
    samples = task.load("train", 1000)
    pictures = [decode_image(ref, s.id) for s in samples[:16] for ref in s.images]
    drawn = rss() - before
    del samples, pictures
    before = rss()
    every = task.load("train", None)
    print(json.dumps({"rows": rows, "drawn_growth": drawn, "all": len(every), "all_growth": rss() - before}))
""")


def test_opening_a_100k_row_split_with_images_keeps_memory_small(tmp_path, private_hf_home):
    image_bytes = _write_split(tmp_path / "big")
    _write_split(tmp_path / "small", rows=10)
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1"}

    def run(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "big"), mode, str(tmp_path / "small")],
                              capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("prepare")
    measured = json.loads(run("measure").strip().splitlines()[-1])
    print(f"\n100,000-row ScienceQA split, {image_bytes / 2**20:.0f} MiB of images: opening it and drawing 1,000 rows "
          f"grew private memory by {measured['drawn_growth'] / 2**20:.1f} MiB; every row drawn: "
          f"{measured['all_growth'] / ROWS:,.0f} bytes a row")
    assert measured["rows"] == measured["all"] == ROWS
    assert image_bytes / ROWS > 2000  # bytes of image a row, every one different
    # Opening + counting + drawing 1,000 rows + decoding 16 images: the index (8 bytes a row),
    # 1,000 rows of text and allocator slack. Measured 16.4 MiB (docs/data.md); reading the rows
    # through Table.take copied the split's whole text columns instead: 110 MiB.
    assert measured["drawn_growth"] < 24 * 2**20, measured
    # Every row drawn (train_size: null): each keeps its question, hint, options, solution and a
    # reference, never its image or lecture. Measured 1,635 bytes a row.
    assert measured["all_growth"] / ROWS < 2048, measured


def test_rows_are_read_batch_by_batch_in_the_order_asked():
    import pyarrow as pa

    from lite_cpt.data.rows import take_rows

    batches = [pa.record_batch({"n": list(range(start, start + 3)), "s": [f"r{i}" for i in range(start, start + 3)]})
               for start in (0, 3, 6)]
    table = pa.Table.from_batches(batches)
    indices = [7, 0, 4, 4, 8, 1]
    assert take_rows(table, indices) == table.take(pa.array(indices)).to_pylist()
    assert take_rows(table, []) == []
    with pytest.raises(IndexError):
        take_rows(table, [9])
