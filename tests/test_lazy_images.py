"""A task holds references to images, never their bytes: opening a large split and drawing a
training sample from it costs memory for the drawn rows' text, not for the split's images.

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
from PIL import Image

ROWS = 100_000
IMAGE_PIXELS = 26  # a 26x26 noise PNG: ~2 KB a row, ~200 MB of images in the split


def _write_split(directory: Path, rows: int = ROWS) -> int:
    """A ScienceQA-shaped parquet split of `rows` rows, each with an embedded ~2 KB PNG."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Features, Image as ImageFeature, List, Value

    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(64):
        buffer = io.BytesIO()
        noise = rng.integers(0, 255, (IMAGE_PIXELS, IMAGE_PIXELS, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    features = Features({"image": ImageFeature(), "question": Value("string"), "choices": List(Value("string")),
                         "answer": Value("int8"), "hint": Value("string"), "solution": Value("string")})
    images = [{"bytes": pngs[i % len(pngs)], "path": None} for i in range(rows)]
    table = pa.table({
        "image": pa.array(images, type=features.arrow_schema.field("image").type),
        "question": pa.array([f"Which color is shape {i}?" for i in range(rows)]),
        "choices": pa.array([["red", "blue"]] * rows),
        "answer": pa.array([i % 2 for i in range(rows)], type=pa.int8()),
        "hint": pa.array([""] * rows),
        "solution": pa.array(["Look at the shape."] * rows),
    }, schema=features.arrow_schema)
    (directory / "data").mkdir(parents=True)
    pq.write_table(table, directory / "data" / "train-00000-of-00001.parquet")
    return sum(len(image["bytes"]) for image in images)


MEASURE = textwrap.dedent("""
    import json, sys
    from lite_cpt.data.images import decode_image
    from lite_cpt.recipe import TaskConfig
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
    assert measured["rows"] == measured["all"] == ROWS
    assert image_bytes / ROWS > 1900  # bytes of image a row
    # opening + counting + drawing 1,000 rows + decoding 16 images: the index (8 bytes a row),
    # 1,000 rows of text and allocator slack, a small fraction of the split's ~200 MB of images
    assert measured["drawn_growth"] < 30 * 2**20, measured
    # every row drawn (train_size: null): each holds its text and a reference, never its image
    assert measured["all_growth"] / ROWS < 1900, measured
